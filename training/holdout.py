"""Leave-one-known-class-out validation: how design choices are made without any unknown digit.

For each known class c, train on the other known classes (training split only) and measure how
well every score separates their validation images from the validation images of c: AUROC, and the
share of c accepted at the threshold calibrated as the shipped model's (``scores.target_tpr`` of the
others, ``scores.calibration``). The mean over the folds is the figure used to choose negatives, score
combination and model settings.

With ``--shift``, a model is also trained on every known class and measured on the shift benchmark's
``tuning`` changes with the known test digits only (``training.robustness``): the second figure a
design choice must hold. Digits outside ``known_classes`` are never used.

    openset holdout --config configs/mnist-0to4.json [--set optim.epochs=5] [--shift] [--log runs/experiments.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from openset import shifts
from openset.augment import augment_once
from openset.calibration import threshold_at_tpr
from openset.config import Config, parse_overrides
from openset.data import DATA_DIR_HELP, OpenSetData, Split, open_set_data, remap_classes, select_classes
from openset.export import ExportModule, run_torch
from openset.metrics import auroc, fpr_at_tpr
from openset.models import extract_features
from openset.scores import KNN, Combined, fit_scores
from training.pipeline import calibrate, calibration_scores
from training.robustness import CACHE, balanced, shift_benchmark
from training.train import fit

WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
DISTANCES = ("knn", "centroid", "prototypes")  # each combined with the head over WEIGHT_GRID
TPR_GRID = (0.95, 0.96, 0.97, 0.98, 0.99)  # shares of the known validation digits accepted
# (k, bank; None = every training digit); the small banks for the model's cost (issue 13: the bank read is most of it)
KNN_GRID = ((5, 8192), (10, 8192), (20, 8192), (10, None), (30, None), (100, None),
            (3, 4096), (5, 4096), (1, 2048), (2, 2048), (3, 2048), (5, 2048), (10, 2048), (2, 1024), (3, 1024))
SHIFT_PER_CLASS = 60


def _only(split: Split, keep: list[int], remap: bool) -> Split:
    part = select_classes(split, tuple(keep), keep=True)
    return remap_classes(part, tuple(keep)) if remap else part


def holdout_fold(cfg: Config, data: OpenSetData, held_out: int) -> dict[str, dict[str, float]]:
    """Every score, validation of the other known classes vs validation of ``held_out``: ``{"auroc": ..,
    "accepted": ..}``, each keyed by score name (``combined<distance>@<head weight>`` for the grid)."""
    keep = [c for c in range(len(data.classes)) if c != held_out]
    fold = OpenSetData(
        classes=tuple(data.classes[c] for c in keep),
        train=_only(data.train, keep, remap=True),
        val=_only(data.val, keep, remap=True),
        test_known=data.test_known,  # unused here
        test_unknown=data.test_unknown,  # unused here
        train_unknown=_only(data.train, [held_out], remap=False),  # unused unless supervised
    )
    model, _ = fit(cfg, fold)
    train_feats = extract_features(model, fold.train.images)
    val_feats = extract_features(model, fold.val.images)
    out_feats = extract_features(model, _only(data.val, [held_out], remap=False).images)
    # The threshold's digits: the validation digits, and (``clean+augmented``) them changed once more. Both are
    # measured for the shipped score; the config's calibration is the one of every other figure.
    changed = augment_once(fold.val.images, cfg.augment, cfg.seed)
    changed_feats = extract_features(model, changed)
    calibration = [val_feats] + ([changed_feats] if cfg.scores.calibration == "clean+augmented" else [])
    scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # validation, held-out class, calibration
    detectors = fit_scores(cfg.scores, cfg.seed, train_feats, fold.train.labels)
    for name, det in detectors.items():  # each fitted and scored once
        scores[name] = (det.score_features(val_feats), det.score_features(out_feats),
                        np.concatenate([det.score_features(f) for f in calibration]))
    # The kNN score's k and bank size are design choices too: a grid on the same features.
    for k, bank in KNN_GRID:
        det = KNN(k, bank or len(fold.train), cfg.seed).fit_features(train_feats, fold.train.labels)
        scores[f"knn{k}/{bank or 'all'}"] = (det.score_features(val_feats), det.score_features(out_feats),
                                             np.concatenate([det.score_features(f) for f in calibration]))
    # The combined score's distance and head weight are design choices: a grid, from one set of distances each.
    for distance in DISTANCES:
        combined = Combined(0.0, detectors[distance]).fit_features(train_feats, fold.train.labels)
        parts = [combined.standardised_components(f) for f in (val_feats, out_feats)]
        parts.append(np.concatenate([combined.standardised_components(f) for f in calibration]))
        for w in WEIGHT_GRID:
            scores[f"combined{distance}@{w:g}"] = tuple(p @ np.array([w, 1 - w]) for p in parts)
    val, out, _ = scores["combined"]
    both = {"clean": val, "clean+augmented": np.concatenate([val, detectors["combined"].score_features(changed_feats)])}
    return {"auroc": {name: auroc(val, out) for name, (val, out, _) in scores.items()},
            # The finer figure (the mean AUROC saturates): the held-out digit accepted at 95 % of the others.
            "fpr95": {name: fpr_at_tpr(val, out) for name, (val, out, _) in scores.items()},
            "accepted": {name: float(np.mean(out >= threshold_at_tpr(calib, cfg.scores.target_tpr)))
                         for name, (_, out, calib) in scores.items()},
            # The shipped score's threshold is a choice as well: the held-out class accepted at other targets.
            "combined_accepted_at": {f"{how}@{tpr:g}": float(np.mean(out >= threshold_at_tpr(calib, tpr)))
                                     for how, calib in both.items() for tpr in TPR_GRID}}


def shift_on_knowns(cfg: Config, data: OpenSetData) -> dict:
    """A model of every known class, calibrated as shipped, on the tuning changes with known test digits only."""
    model, _ = fit(cfg, data)
    train_feats = extract_features(model, data.train.images)
    combined = fit_scores(cfg.scores, cfg.seed, train_feats, data.train.labels, ["combined"])["combined"]
    module = ExportModule(model, combined)
    changes = [name for name, change in shifts.CHANGES.items() if change.group == "tuning"]
    known = balanced(data.test_known, SHIFT_PER_CLASS, seed=0)
    predict = lambda images: run_torch(module, images)  # noqa: E731
    score = lambda images: predict(images)["score"]  # noqa: E731
    result = shift_benchmark(predict, calibrate(score, cfg, data.val).threshold, known, changes=changes, cache=CACHE)
    at = {}
    for how in ("clean", "clean+augmented"):  # the same pictures (cached) at other thresholds
        calibration = calibration_scores(score, cfg.override(scores={"calibration": how}), data.val)
        for tpr in TPR_GRID:
            other = shift_benchmark(predict, threshold_at_tpr(calibration, tpr), known, changes=changes, cache=CACHE)
            at[f"{how}@{tpr:g}"] = {k: other["groups"]["tuning"][k]["known_right"] for k in ("mean", "worst")}
    return {"clean_right": result["clean"]["known_right"],
            "changes": {name: c["mean"]["known_right"] for name, c in result["changes"].items()},
            "mean_right": result["groups"]["tuning"]["mean"]["known_right"],
            "worst_right": result["groups"]["tuning"]["worst"]["known_right"], "at": at}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("--config", required=True, help="training config (JSON) whose design is validated")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. optim.epochs=5")
    parser.add_argument("--folds", type=int, nargs="*", default=None,
                        help="indices of the known classes to hold out (default: every one)")
    parser.add_argument("--shift", action="store_true",
                        help="also train on every known class and measure known digits under the tuning changes")
    parser.add_argument("--name", default=None, help="the variant's name in the log (default: the overrides)")
    parser.add_argument("--log", default=None, help="append the result as one JSON line to this file")
    return parser


def main(args: argparse.Namespace) -> dict:
    cfg = Config.from_json(args.config).override(**parse_overrides(args.set))
    data = open_set_data(cfg.data, cfg.seed, args.data_dir)
    folds = args.folds if args.folds is not None else list(range(len(data.classes)))
    start = time.perf_counter()
    rows = [holdout_fold(cfg, data, c) for c in folds]
    result = {"name": args.name or " ".join(args.set) or "base", "config": args.config, "overrides": args.set,
              "folds": folds}
    for figure in ("auroc", "fpr95", "accepted", "combined_accepted_at"):  # (no folds: the shift measurement only)
        result[f"mean_{figure}"] = {name: float(np.mean([r[figure][name] for r in rows])) for name in rows[0][figure]} \
            if rows else {}
    # Every score fold by fold (the grid's cells too), and the shipped score's worst fold: what the rules read.
    result["fold_figures"] = {str(c): {figure: r[figure] for figure in ("auroc", "fpr95")}
                              for c, r in zip(folds, rows, strict=True)}
    result["shipped_folds"] = {str(c): {figure: r[figure]["combined"] for figure in ("auroc", "fpr95", "accepted")}
                               for c, r in zip(folds, rows, strict=True)}
    if rows:
        result["shipped_worst"] = {"auroc": min(r["auroc"]["combined"] for r in rows),
                                   "fpr95": max(r["fpr95"]["combined"] for r in rows)}
    if args.shift:
        result["shift_knowns"] = shift_on_knowns(cfg, data)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))
    if rows:
        per_fold = ", ".join(f"{data.classes[int(c)]}: {f['fpr95']:.3f}" for c, f in result["shipped_folds"].items())
        print(f"holdout, shipped score: AUROC mean {result['mean_auroc']['combined']:.4f} / worst "
              f"{result['shipped_worst']['auroc']:.4f}; FPR at 95 % TPR mean {result['mean_fpr95']['combined']:.3f} / "
              f"worst {result['shipped_worst']['fpr95']:.3f} (by held-out digit: {per_fold})", file=sys.stderr)
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        with open(args.log, "a") as log:
            log.write(json.dumps(result) + "\n")
    return result
