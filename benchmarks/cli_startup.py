"""Benchmark: how long ``openset`` takes to start, per command (wall time of the whole process).

    python benchmarks/cli_startup.py [--runs 7]

Prints one table: median and slowest of ``--runs`` runs of each command line. Only the chosen
command's module is imported, so ``openset --help`` loads neither torch nor ONNX Runtime.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

OPENSET = Path(sys.executable).parent / "openset"
CASES = [["--help"], ["evaluate", "--help"], ["train", "--help"]]


def wall_times(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(OPENSET), *argv], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("| command | median s | slowest s |\n|---|---|---|")
    for argv in CASES:
        times = wall_times(argv, args.runs)
        print(f"| openset {' '.join(argv)} | {statistics.median(times):.3f} | {max(times):.3f} |")


if __name__ == "__main__":
    main()
