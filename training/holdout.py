"""Leave-one-known-class-out validation: how design choices are selected without any unknown digit.

For each known class c, train on the other known classes (training split only) and measure how
well every score separates their validation images from the validation images of c. The mean
AUROC over the folds is the figure used to choose negatives, score combination and model
settings; digits outside ``known_classes`` are never loaded.

    python -m training.holdout --config configs/mnist-0to4.json [--set negatives.kinds=...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from openset.config import Config
from openset.data import DATA_DIR_HELP, OpenSetData, Split, open_set_data, remap_classes, select_classes
from openset.metrics import auroc
from openset.models import extract_features
from openset.scores import KNN, CentroidDistance, Combined, build_detectors
from training.train import fit

WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def _only(split: Split, keep: list[int], remap: bool) -> Split:
    part = select_classes(split, tuple(keep), keep=True)
    return remap_classes(part, tuple(keep)) if remap else part


def holdout_fold(cfg: Config, data: OpenSetData, held_out: int) -> dict[str, float]:
    """AUROC of every score: validation of the other known classes vs validation of ``held_out``."""
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
    detectors = build_detectors(cfg.scores)
    # The combined score's head weight is a design choice: measure a grid of it too.
    detectors.update({f"combinedknn@{w:g}": Combined(w, KNN(cfg.scores.knn_k, cfg.scores.knn_bank))
                      for w in WEIGHT_GRID})
    for per_class in sorted({1, cfg.scores.prototypes_per_class}):
        detectors.update({f"combined{per_class}@{w:g}": Combined(w, CentroidDistance(cfg.scores.centroid_metric,
                                                                                          per_class))
                          for w in WEIGHT_GRID})
    result = {}
    for name, det in detectors.items():
        det.fit_features(train_feats, fold.train.labels)
        result[name] = auroc(det.score_features(val_feats), det.score_features(out_feats))
    return result


def parse_overrides(pairs: list[str]) -> dict:
    """``section.field=json`` pairs into ``Config.override`` keyword arguments."""
    sections: dict = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        section, _, field = key.partition(".")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        sections.setdefault(section, {})[field] = value
    return sections


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("--config", required=True, help="training config (JSON) whose design is validated")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. optim.epochs=5")
    parser.add_argument("--folds", type=int, nargs="*", default=None,
                        help="indices of the known classes to hold out (default: every one)")
    return parser


def main(args: argparse.Namespace) -> dict[str, float]:
    cfg = Config.from_json(args.config).override(**parse_overrides(args.set))
    data = open_set_data(cfg.data, cfg.seed, args.data_dir)
    folds = args.folds if args.folds is not None else list(range(len(data.classes)))
    start = time.perf_counter()
    rows = [holdout_fold(cfg, data, c) for c in folds]
    mean = {name: float(np.mean([r[name] for r in rows])) for name in rows[0]}
    print(json.dumps({"overrides": args.set, "folds": folds, "mean_auroc": mean,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return mean


if __name__ == "__main__":
    main(get_args_parser().parse_args())
