"""Run many training configs and compare them (``openset sweep``): a table, a CSV and figures.

    openset sweep configs/studies/depth --out runs/depth [--epochs 2]

Each trial trains one config (as ``openset train`` does, without exporting) and reports its
parameter count, epochs, best validation accuracy, test accuracy of the known classes, the
open-set AUROC of the combined score against the test set's unknown classes, and its time.
Selection inside a trial uses known-class validation data only; the test figures are reports.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import time
from pathlib import Path

import numpy as np

from openset.artifacts import atomic_write_bytes
from openset.config import Config, ConfigError
from openset.data import DATA_DIR_HELP, open_set_data
from openset.metrics import auroc
from openset.models import extract_features
from openset.scores import fit_scores
from training.train import fit

COLUMNS = ["config", "params", "epochs", "best_val_acc", "test_acc", "open_set_auroc", "train_seconds"]


def _natural(path: Path) -> list:
    """Sort key that puts depth-2 before depth-10 and lr0.0001 before lr0.001."""
    parts = re.split(r"(\d+(?:\.\d+)?)", path.stem)
    return [(0, float(part), "") if i % 2 else (1, 0.0, part) for i, part in enumerate(parts)]


def config_paths(items: list[str]) -> list[Path]:
    """Config files named directly, or every ``*.json`` of a named folder, in natural order."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths.extend(sorted(item.glob("*.json"), key=_natural))
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"no config file or folder at {item}")
    if not paths:
        raise FileNotFoundError(f"no *.json configs in {', '.join(items)}")
    return paths


def run_trial(cfg: Config, root: str | None = None) -> dict:
    """Train one config and measure it; returns a row of the results table plus its history."""
    start = time.perf_counter()
    data = open_set_data(cfg.data, cfg.seed, root)
    model, history = fit(cfg, data, root)
    seconds = time.perf_counter() - start
    train_feats = extract_features(model, data.train.images)
    combined = fit_scores(cfg.scores, cfg.seed, train_feats, data.train.labels, ["combined"])["combined"]
    known = extract_features(model, data.test_known.images)
    open_set = float("nan")  # a closed-set config (every class known) has no unknowns to score
    if len(data.test_unknown):
        unknown = extract_features(model, data.test_unknown.images)
        open_set = auroc(combined.score_features(known), combined.score_features(unknown))
    return {
        "config": cfg.name,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(history),
        "best_val_acc": max(row["val_acc"] for row in history),
        "test_acc": float(np.mean(known.logits.argmax(1) == data.test_known.labels)),
        "open_set_auroc": open_set,
        "train_seconds": seconds,
        "history": history,
    }


def run_on_ray(configs: list[Config], root: str | None, address: str | None, out: Path) -> list[dict]:
    """The same trials as Ray Tune trials (one CPU each), on the cluster at ``address``.

    A Ray instance already started in this process (``ray.init``) is used as it is.
    """
    import json

    import ray
    from ray import tune

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)

    def trainable(params: dict) -> None:
        import torch

        torch.set_num_threads(1)  # one CPU per trial, as requested below
        row = run_trial(Config.model_validate(params["config"]), params["root"])
        # Ray adds the trial's parameters as "config" to every result: the run's name travels as "run".
        tune.report({**{c: row[c] for c in COLUMNS if c != "config"}, "run": row["config"],
                     "history": json.dumps(row["history"])})

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"config": tune.grid_search([c.to_dict() for c in configs]),
                     "root": str(root) if root else None},
        run_config=tune.RunConfig(storage_path=str((out / "ray").resolve()), verbose=0),
    )
    by_name = {}
    for result in tuner.fit():
        if result.error:
            raise RuntimeError(f"Ray trial failed: {result.error}")
        row = {"config": result.metrics["run"], **{c: result.metrics[c] for c in COLUMNS if c != "config"}}
        by_name[row["config"]] = {**row, "history": json.loads(result.metrics["history"])}
    for cfg in configs:
        row = by_name[cfg.name]
        print(f"trial {cfg.name}: done on Ray  val {row['best_val_acc']:.4f}  test {row['test_acc']:.4f}  "
              f"auroc {row['open_set_auroc']:.4f}  {row['train_seconds']:.0f} s", flush=True)
    return [by_name[cfg.name] for cfg in configs]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) and c != "train_seconds" else
                 f"{row[c]:.0f}" if c == "train_seconds" else str(row[c]) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, rows: list[dict], title: str) -> None:
    from openset import plots

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "results.csv", buffer.getvalue().encode())
    atomic_write_bytes(out / "results.md", f"# {title}\n\n{markdown_table(rows)}".encode())
    plots.compare_curves({r["config"]: r["history"] for r in rows}, title, out / "curves.png")
    plots.compare_bars({r["config"]: {"test acc": r["test_acc"], "open-set AUROC": r["open_set_auroc"]}
                        for r in rows}, title, out / "summary.png")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run many configs and compare them", add_help=add_help)
    parser.add_argument("configs", nargs="+", help="config files, or folders of *.json configs")
    parser.add_argument("--out", required=True, help="folder for results.csv, results.md and figures")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--epochs", type=int, default=None, help="override every config's epochs (quick runs)")
    parser.add_argument("--title", default=None, help="title of the table and figures")
    parser.add_argument("--ray-address", default=None,
                        help="run the trials with Ray Tune on this cluster ('auto', 'ray://host:10001', or 'local')")
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    paths = config_paths(args.configs)
    configs = [Config.from_json(path) for path in paths]  # every config is validated before any trial runs
    if args.epochs is not None:
        configs = [cfg.override(optim={"epochs": args.epochs}) for cfg in configs]
    if len({cfg.name for cfg in configs}) != len(configs):
        raise ConfigError("every config of a sweep needs its own name")
    out = Path(args.out)
    if getattr(args, "ray_address", None):
        rows = run_on_ray(configs, args.data_dir, None if args.ray_address == "local" else args.ray_address, out)
        write_results(out, rows, args.title or out.name)
        print(markdown_table(rows))
        return rows
    rows = []
    for number, cfg in enumerate(configs, 1):
        print(f"trial {number}/{len(configs)} {cfg.name}: running", flush=True)
        row = run_trial(cfg, args.data_dir)
        rows.append(row)
        print(f"trial {number}/{len(configs)} {cfg.name}: done  val {row['best_val_acc']:.4f}  "
              f"test {row['test_acc']:.4f}  auroc {row['open_set_auroc']:.4f}  {row['train_seconds']:.0f} s",
              flush=True)
    write_results(out, rows, args.title or out.name)
    print(markdown_table(rows))
    return rows
