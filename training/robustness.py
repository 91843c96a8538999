"""The shift benchmark (``openset robustness``): test digits as people's pictures, changed in realistic ways.

Known and unknown test digits are drawn as dark ink on paper and changed by every change of
:mod:`openset.shifts` at severities 1-3; each picture goes through the service's own preprocessing
(``service.preprocess``) and then the model, so the figures are what users get. For every change:

* ``known_right``: known digits answered with their right label;
* ``known_accepted``: known digits answered with any known label;
* ``unknown_refused``: unknown digits answered "other" (evaluation only: never used for a choice).

Per change the figure is the mean over its severities; per group (``tuning``, ``held_out`` and ``all``) the
mean and the worst change. ``clean`` is the same pictures without a change. ONNX Runtime, numpy and Pillow
only: it runs on a serving install.

    openset robustness --model models/mnist-0to4 [--per-class 100] [--out robustness.json]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from openset import shifts
from openset.artifacts import atomic_write_json
from openset.calibration import UNKNOWN, decide
from openset.config import EvaluationConfig
from openset.data import DATA_DIR_HELP, Split
from openset.manifest import Layout, load_artifact
from service import preprocess

Predict = Callable[[np.ndarray], dict[str, np.ndarray]]  # images [N, 1, side, side] -> contract outputs
FIGURES = ("known_right", "known_accepted", "unknown_refused")
CACHE = Path("runs") / "cache" / "shifts"


def balanced(split: Split, per_class: int, seed: int) -> Split:
    """``per_class`` samples of every label, in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(split))
    picks = np.concatenate([order[split.labels[order] == label][:per_class] for label in np.unique(split.labels)])
    return split.subset(np.sort(picks))


def _cache_key(cache: Path, split: Split, change: str | None, severity: int, seed: int, layout: Layout) -> Path:
    code = inspect.getsource(shifts) + inspect.getsource(preprocess)
    digest = hashlib.sha256(code.encode() + split.images.tobytes()
                            + f"{change}/{severity}/{seed}/{layout.box}/{layout.side}".encode())
    return cache / f"{change}-{severity}-{digest.hexdigest()[:16]}.npy"


def pictures(split: Split, change: str | None, severity: int, seed: int, layout: Layout = preprocess.MNIST
             ) -> np.ndarray:
    """The split's digits as pictures (changed, unless ``change`` is None), through the service's preprocessing
    (laid out as the model's manifest says): float32 ``[N, 1, side, side]``."""
    rng = np.random.default_rng([seed, severity, *(change or "clean").encode()])
    out = np.empty((len(split), 1, layout.side, layout.side), np.float32)
    for i, digit in enumerate(split.images[:, 0]):
        data = shifts.render_clean(digit, rng) if change is None else shifts.render(digit, change, severity, rng)
        out[i, 0] = preprocess.from_image_bytes(data, max_pixels=10**7, layout=layout)
    return out


def all_pictures(tasks: list[tuple[Split, str | None, int]], seed: int, layout: Layout, cache: Path | None
                 ) -> list[np.ndarray]:
    """:func:`pictures` for every (split, change, severity), on every core; with ``cache``, kept on disk under
    a key of the digits, the change and the code (for the experiment loop)."""
    keys = [_cache_key(cache, *task, seed, layout) if cache else None for task in tasks]
    out = [np.load(key) if key and key.is_file() else None for key in keys]
    missing = [i for i, done in enumerate(out) if done is None]
    if not missing:
        return out
    # spawn, not fork: the caller may hold torch's thread pools, which do not survive a fork.
    with ProcessPoolExecutor(min(len(missing), os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        arguments = zip(*[(*tasks[i], seed, layout) for i in missing], strict=True)
        for i, result in zip(missing, pool.map(pictures, *arguments), strict=True):
            out[i] = result
            if keys[i]:
                keys[i].parent.mkdir(parents=True, exist_ok=True)
                np.save(keys[i], result)
    return out


def examples(digit: np.ndarray, seed: int = 0) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """For the report's figure: the clean picture and every change at each severity, each as (picture sent,
    model input), for one digit."""
    def pair(data: bytes) -> tuple[np.ndarray, np.ndarray]:
        image = preprocess.decode(data, max_pixels=10**7)
        return np.asarray(image, np.float32) / 255, preprocess.mnist_like(image)

    rng = np.random.default_rng(seed)
    rows = {"clean": [pair(shifts.render_clean(digit, rng))]}
    for name in shifts.CHANGES:
        rows[name] = [pair(shifts.render(digit, name, s, rng)) for s in shifts.SEVERITIES]
    return rows


def answered(predict: Predict, threshold: float, images: np.ndarray) -> np.ndarray:
    out = predict(images)
    return decide(out["probs"], out["score"], threshold)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def shift_benchmark(predict: Predict, threshold: float, known: Split, unknown: Split | None = None,
                    changes: list[str] | None = None, seed: int = 0, layout: Layout = preprocess.MNIST,
                    cache: Path | None = None) -> dict:
    """Every change at every severity, and the clean pictures; ``unknown`` None measures the known digits only.
    ``layout``: the model's (its manifest's ``input.layout``)."""
    conditions = [(None, 0)] + [(name, s) for name in changes or list(shifts.CHANGES) for s in shifts.SEVERITIES]
    splits = [known] if unknown is None else [known, unknown]
    images = iter(all_pictures([(split, *c) for c in conditions for split in splits], seed, layout, cache))
    rows = {}
    for condition in conditions:
        decided = answered(predict, threshold, next(images))
        row = {"known_right": float(np.mean(decided == known.labels)),
               "known_accepted": float(np.mean(decided != UNKNOWN))}
        if unknown is not None:
            row["unknown_refused"] = float(np.mean(answered(predict, threshold, next(images)) == UNKNOWN))
        rows[condition] = row
    result: dict = {"samples": {"known": len(known), "unknown": 0 if unknown is None else len(unknown)},
                    "clean": rows[(None, 0)], "changes": {}}
    for name in dict.fromkeys(name for name, _ in conditions[1:]):
        change = shifts.CHANGES[name]
        per = {str(s): rows[(name, s)] for s in shifts.SEVERITIES}
        result["changes"][name] = {"group": change.group, "description": change.description, "severity": per,
                                   "mean": _mean(list(per.values()))}
    result["groups"] = {}
    for group in ("tuning", "held_out", "all"):
        means = [c["mean"] for c in result["changes"].values() if group in (c["group"], "all")]
        if means:
            result["groups"][group] = {"changes": len(means), "mean": _mean(means),
                                       "worst": {k: float(min(m[k] for m in means)) for k in means[0]}}
    return result


def table(result: dict) -> list[str]:
    """The benchmark as Markdown rows: clean, every change (mean over severities), the groups."""
    shown = [k for k in FIGURES if k in result["clean"]]
    header = ["| change | group | " + " | ".join(k.replace("_", " ") for k in shown) + " | per severity (right) |",
              "|---" * (len(shown) + 3) + "|"]
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    rows = ["| clean pictures | | " + " | ".join(pct(result["clean"][k]) for k in shown) + " | |"]
    for name, change in result["changes"].items():
        per = " / ".join(pct(change["severity"][s]["known_right"]) for s in change["severity"])
        rows.append(f"| {name} | {change['group']} | " + " | ".join(pct(change["mean"][k]) for k in shown)
                    + f" | {per} |")
    for group, figures in result["groups"].items():
        rows.append(f"| **{group}: mean** ({figures['changes']} change{'s' * (figures['changes'] != 1)}) | | "
                    + " | ".join(pct(figures["mean"][k]) for k in shown) + " | |")
        rows.append(f"| **{group}: worst change** | | " + " | ".join(pct(figures["worst"][k]) for k in shown) + " | |")
    return header + rows


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="The shift benchmark of a model directory", add_help=add_help)
    parser.add_argument("--model", required=True, help="directory with model.onnx and model.json")
    parser.add_argument("--per-class", type=int, default=EvaluationConfig().shift_per_class,
                        help="test digits of every class per change and severity (default: as openset train)")
    parser.add_argument("--changes", nargs="*", default=None, choices=list(shifts.CHANGES), help="default: all")
    parser.add_argument("--knowns-only", action="store_true", help="leave the unknown digits out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    return parser


def main(args: argparse.Namespace) -> dict:
    from training.evaluate import manifest_test_sets

    artifact = load_artifact(args.model)
    test_known, test_unknown = manifest_test_sets(artifact.manifest, args.data_dir)
    known = balanced(test_known, args.per_class, args.seed)
    unknown = None if args.knowns_only else balanced(test_unknown, args.per_class, args.seed)
    result = shift_benchmark(artifact.run, artifact.manifest.threshold, known, unknown, args.changes, args.seed,
                             artifact.manifest.input.layout)
    print("\n".join(table(result)))
    if args.out:
        atomic_write_json(args.out, result)
    return result
