"""Hyper-parameter search with Optuna (``openset tune``), selecting on known-class validation data only.

A tune file names a base config and the space to search, as dotted config fields::

    {"base": "configs/mnist-0to4.json", "trials": 20,
     "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": true},
               "model.dropout": {"low": 0.0, "high": 0.5},
               "model.hidden": {"choices": [[256], [512, 256], [512, 512, 256]]}}}

The objective is the best validation accuracy of the known classes; a median pruner stops trials
that fall behind after their first epochs. The result: the best overrides, a table of all trials and
the best config as JSON, ready for ``openset train``.

With ``--ray-address`` the same search runs as Ray Tune trials on a cluster: Optuna's TPE sampler
proposes (``OptunaSearch``), an ASHA scheduler stops the laggards, and the same files are written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from openset.artifacts import atomic_write_bytes, atomic_write_json
from openset.config import Config, ConfigError, dotted_sections
from openset.data import DATA_DIR_HELP, open_set_data
from training.train import fit


def load_tune_file(path: str | Path) -> tuple[Config, dict, int]:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"tune file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(spec.get("space"), dict) or not spec["space"]:
        raise ConfigError(f"{path}: needs a non-empty 'space' object")
    base = spec.get("base", {})
    if isinstance(base, str):  # a config file, relative to the working folder or to the tune file
        config = Config.from_json(base if Path(base).is_file() else path.parent / base)
    else:
        try:
            config = Config.model_validate(base)
        except ValueError as err:
            raise ConfigError(f"{path}: invalid inline base config: {err}") from None
    for key, domain in spec["space"].items():
        section, _, field = key.partition(".")
        if section not in Config.model_fields or not field:
            raise ConfigError(f"{path}: space key {key!r} is not section.field of a config")
        if not isinstance(domain, dict) or not ("choices" in domain or {"low", "high"} <= set(domain)):
            raise ConfigError(f"{path}: space {key!r} needs 'choices' or 'low' and 'high'")
    return config, spec["space"], int(spec.get("trials", 20))


def overrides_from(space: dict, values: dict) -> dict:
    """Sampled ``values`` (an index for a choice) as ``Config.override`` sections."""
    return dotted_sections({key: domain["choices"][values[key]] if "choices" in domain else values[key]
                            for key, domain in space.items()})


def distributions(space: dict) -> dict[str, optuna.distributions.BaseDistribution]:
    """The tune file's space as Optuna distributions: the one translation, which the local study and Ray Tune's
    ``OptunaSearch`` both sample from. A choice is sampled as its index (Optuna's categories must be scalars)."""
    out = {}
    for key, domain in space.items():
        if "choices" in domain:
            out[key] = optuna.distributions.CategoricalDistribution(list(range(len(domain["choices"]))))
        elif isinstance(domain["low"], int) and isinstance(domain["high"], int) and not domain.get("log"):
            out[key] = optuna.distributions.IntDistribution(domain["low"], domain["high"])
        else:
            out[key] = optuna.distributions.FloatDistribution(domain["low"], domain["high"],
                                                              log=bool(domain.get("log")))
    return out


def trial_config(base: Config, space: dict, values: dict, epochs: int | None) -> Config:
    """The config of one trial: the base with the sampled values (and ``epochs``, when given)."""
    cfg = base.override(**overrides_from(space, values))
    return cfg if epochs is None else cfg.override(optim={"epochs": epochs})


def run_on_ray(base: Config, space: dict, trials: int, args: argparse.Namespace) -> list[dict]:
    """The search as Ray Tune trials (one CPU each); a Ray instance already started here is used as it is."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    if not ray.is_initialized():
        ray.init(address=None if args.ray_address == "local" else args.ray_address, log_to_driver=False)
    epochs = args.epochs or base.optim.epochs
    def trainable(values: dict) -> None:
        import torch

        torch.set_num_threads(1)  # one CPU per trial, as requested below
        cfg = trial_config(base, space, values, epochs)
        fit(cfg, open_set_data(cfg.data, cfg.seed, args.data_dir), args.data_dir,
            on_epoch=lambda row: tune.report({"val_acc": row["val_acc"], "epoch": row["epoch"]}))

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max", num_samples=trials,
            search_alg=OptunaSearch(space=distributions(space), metric="val_acc", mode="max", seed=args.seed),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=1)),
        run_config=tune.RunConfig(storage_path=str((Path(args.out) / "ray").resolve()), verbose=0),
    )
    rows = []
    for result in tuner.fit():
        if result.error:
            raise RuntimeError(f"Ray trial failed: {result.error}")
        history = result.metrics_dataframe
        values = {key: result.config[key] for key in space}
        state = "complete" if int(history["epoch"].max()) >= epochs else "pruned"
        rows.append({"state": state, "value": float(history["val_acc"].max()), "params": values,
                     "overrides": overrides_from(space, values)})
        print(f"trial {len(rows)}: {state} on Ray val {rows[-1]['value']:.4f} {values}", flush=True)
    return rows


def run_locally(base: Config, space: dict, trials: int, args: argparse.Namespace) -> list[dict]:
    """The search in this process: Optuna's TPE sampler asks, a median pruner stops trials that fall behind."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    data_cache: dict = {}
    rows = []
    for number in range(1, trials + 1):
        trial = study.ask(distributions(space))
        cfg = trial_config(base, space, trial.params, args.epochs)
        key = (cfg.data, cfg.seed)
        if key not in data_cache:
            data_cache[key] = open_set_data(cfg.data, cfg.seed, args.data_dir)

        def report(row: dict, trial: optuna.Trial = trial) -> None:
            trial.report(row["val_acc"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            _, history = fit(cfg, data_cache[key], args.data_dir, on_epoch=report)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            value, state = None, "pruned"  # a pruned trial has no final value: it cannot be the best one
        else:
            value, state = max(row["val_acc"] for row in history), "complete"
            study.tell(trial, value)
        rows.append({"state": state, "value": value, "params": trial.params,
                     "overrides": overrides_from(space, trial.params)})
        shown = f"val {value:.4f}" if value is not None else ""
        print(f"trial {number}: {state} {shown} {trial.params}", flush=True)
    return rows


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Hyper-parameter search with Optuna", add_help=add_help)
    parser.add_argument("tune_file", help="JSON with 'base', 'space' and 'trials'")
    parser.add_argument("--out", required=True, help="folder for best.json, trials.md and best-config.json")
    parser.add_argument("--trials", type=int, default=None, help="override the tune file's trial count")
    parser.add_argument("--epochs", type=int, default=None, help="override every trial's epochs (quick runs)")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--ray-address", default=None,
                        help="run the trials with Ray Tune on this cluster ('auto', 'ray://host:10001', or 'local')")
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    """Run the search; returns one row per trial (state, value, params, overrides)."""
    base, space, trials = load_tune_file(args.tune_file)
    search = run_on_ray if getattr(args, "ray_address", None) else run_locally
    rows = search(base, space, args.trials or trials, args)
    complete = [(number, row) for number, row in enumerate(rows, 1) if row["state"] == "complete"]
    if not complete:
        raise RuntimeError("no trial completed; nothing to choose from")
    number, best = max(complete, key=lambda item: item[1]["value"])
    out = Path(args.out)
    atomic_write_json(out / "best.json", {"value": best["value"], "overrides": best["overrides"], "trial": number})
    atomic_write_json(out / "best-config.json", base.override(**best["overrides"]).to_dict())
    lines = ["| trial | state | best val acc | parameters |", "|---|---|---|---|"]
    for n, row in enumerate(rows, 1):
        value = f"{row['value']:.4f}" if row["value"] is not None else "—"
        lines.append(f"| {n} | {row['state']} | {value} | {json.dumps(row['params'])} |")
    atomic_write_bytes(out / "trials.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    print(f"best: trial {number}, val {best['value']:.4f}, {best['overrides']}")
    return rows
