"""Benchmark: does a change of the preprocessing decide the shift benchmark's pictures as before?

    .venv/bin/python -m benchmarks.preprocess_agreement REV [--model models/mnist-0to4] [--per-class 100]

Renders the shift benchmark's pictures (``openset robustness``: the same digits, changes, severities and seeds)
once, lays each out with REV's ``service/preprocess.py`` and with this tree's, and lets the model decide both.
Prints one table: per change (and for the clean pictures), the share of pictures decided alike, and the
benchmark's figures (known digits right, unknown digits refused) under each; then the totals.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from openset import shifts
from openset.calibration import UNKNOWN, decide
from openset.config import EvaluationConfig
from openset.manifest import load_artifact
from service import preprocess
from training.evaluate import manifest_test_sets
from training.robustness import balanced

REPO = Path(__file__).resolve().parents[1]


def module_at(revision: str) -> types.ModuleType:
    """``service/preprocess.py`` as it was at ``revision``, as a module of its own."""
    source = subprocess.run(["git", "show", f"{revision}:service/preprocess.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"preprocess_at_{revision}")
    exec(compile(source, f"{revision}:service/preprocess.py", "exec"), module.__dict__)
    return module


def decisions(artifact, images: list[np.ndarray]) -> np.ndarray:
    out = artifact.run(np.stack(images)[:, None])
    return decide(out["probs"], out["score"], artifact.manifest.threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="the git revision whose preprocessing is compared (e.g. HEAD)")
    parser.add_argument("--model", default="models/mnist-0to4")
    parser.add_argument("--per-class", type=int, default=EvaluationConfig().shift_per_class)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    old, artifact = module_at(args.revision), load_artifact(args.model)
    layout = artifact.manifest.input.layout
    known, unknown = (balanced(s, args.per_class, args.seed) for s in manifest_test_sets(artifact.manifest, None))
    conditions = [(None, 0)] + [(name, s) for name in shifts.CHANGES for s in shifts.SEVERITIES]
    print(f"| change | decided alike | known right {args.revision} / tree | unknown refused {args.revision} / tree |")
    print("|---|---|---|---|")
    rows: dict[str, list[list[float]]] = {}
    alike_all, total = 0, 0
    for change, severity in conditions:
        name = change or "clean pictures"
        row = rows.setdefault(name, [])
        figures = []
        for split in (known, unknown):  # as training.robustness.pictures draws them
            rng = np.random.default_rng([args.seed, severity, *(change or "clean").encode()])
            before, after = [], []
            for digit in split.images[:, 0]:
                data = (shifts.render_clean(digit, rng) if change is None
                        else shifts.render(digit, change, severity, rng))
                before.append(old.from_image_bytes(data, 10**7, layout))
                after.append(preprocess.from_image_bytes(data, 10**7, layout))
            a, b = decisions(artifact, before), decisions(artifact, after)
            alike_all, total = alike_all + int((a == b).sum()), total + len(a)
            right = split.labels if split is known else UNKNOWN
            figures += [float(np.mean(a == b)), float(np.mean(a == right)), float(np.mean(b == right))]
        row.append(figures)
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    for name, per in rows.items():
        m = np.mean(per, axis=0)
        alike = (m[0] + m[3]) / 2
        print(f"| {name} | {pct(alike)} | {pct(m[1])} / {pct(m[2])} | {pct(m[4])} / {pct(m[5])} |")
    print(f"| **all pictures** | {pct(alike_all / total)} ({alike_all} of {total}) | | |")


if __name__ == "__main__":
    sys.exit(main())
