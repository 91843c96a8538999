"""Hyper-parameter search with Optuna (``openset tune``), selecting on known-class validation data only.

A tune file names a base config and the space to search, as dotted config fields::

    {"base": "configs/mnist-0to4.json", "trials": 20, "direction": "maximize",
     "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": true},
               "model.dropout": {"low": 0.0, "high": 0.5},
               "model.hidden": {"choices": [[256], [512, 256], [512, 512, 256]]}}}

The objective is the best validation accuracy of the known classes; a median pruner stops trials
that fall behind after their first epochs. The result: the best overrides, a table of all trials and
the best config as JSON, ready for ``openset train``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from openset.artifacts import atomic_write_bytes, atomic_write_json
from openset.config import Config, ConfigError
from openset.data import open_set_data
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


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """The trial's values as ``Config.override`` sections."""
    sections: dict[str, dict] = {}
    for key, domain in space.items():
        section, _, field = key.partition(".")
        if "choices" in domain:
            # Optuna's categorical values must be scalars: choose an index, keep the value.
            value = domain["choices"][trial.suggest_categorical(key, list(range(len(domain["choices"]))))]
        elif isinstance(domain["low"], int) and isinstance(domain["high"], int) and not domain.get("log"):
            value = trial.suggest_int(key, domain["low"], domain["high"])
        else:
            value = trial.suggest_float(key, domain["low"], domain["high"], log=bool(domain.get("log")))
        sections.setdefault(section, {})[field] = value
    return sections


def objective_factory(base: Config, space: dict, data_cache: dict, root: str | None, epochs: int | None):
    def objective(trial: optuna.Trial) -> float:
        overrides = suggest(trial, space)
        cfg = base.override(**overrides)
        if epochs is not None:
            cfg = cfg.override(optim={"epochs": epochs})
        key = (cfg.data, cfg.seed)
        if key not in data_cache:
            data_cache[key] = open_set_data(cfg.data, cfg.seed, root)

        def report(row: dict) -> None:
            trial.report(row["val_acc"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        _, history = fit(cfg, data_cache[key], root, on_epoch=report)
        trial.set_user_attr("overrides", overrides)
        return max(row["val_acc"] for row in history)

    return objective


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Hyper-parameter search with Optuna", add_help=add_help)
    parser.add_argument("tune_file", help="JSON with 'base', 'space' and 'trials'")
    parser.add_argument("--out", required=True, help="folder for best.json, trials.md and best-config.json")
    parser.add_argument("--trials", type=int, default=None, help="override the tune file's trial count")
    parser.add_argument("--epochs", type=int, default=None, help="override every trial's epochs (quick runs)")
    parser.add_argument("--data-dir", default=None, help="data root (default: $OPENSET_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    return parser


def main(args: argparse.Namespace) -> optuna.Study:
    base, space, trials = load_tune_file(args.tune_file)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"val {trial.value:.4f}" if trial.value is not None else ""
        print(f"trial {trial.number + 1}: {trial.state.name.lower()} {value} {trial.params}", flush=True)

    study.optimize(objective_factory(base, space, {}, args.data_dir, args.epochs),
                   n_trials=args.trials or trials, callbacks=[progress])
    out = Path(args.out)
    best = study.best_trial
    best_config = base.override(**best.user_attrs["overrides"])
    atomic_write_json(out / "best.json", {"value": best.value, "overrides": best.user_attrs["overrides"],
                                          "trial": best.number})
    atomic_write_json(out / "best-config.json", best_config.to_dict())
    lines = ["| trial | state | best val acc | parameters |", "|---|---|---|---|"]
    for t in study.trials:
        value = f"{t.value:.4f}" if t.value is not None else "—"
        lines.append(f"| {t.number + 1} | {t.state.name.lower()} | {value} | {json.dumps(t.params)} |")
    atomic_write_bytes(out / "trials.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    print(f"best: trial {best.number + 1}, val {best.value:.4f}, {best.user_attrs['overrides']}")
    return study
