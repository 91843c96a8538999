"""Benchmark: the service of another revision against this working tree, A/B, on the same machine at once.

    .venv/bin/python -m benchmarks.compare_revisions REV [--rounds 5] [--seconds 4]

Checks REV out into a temporary git worktree, starts its ``openset-serve`` (its code, its shipped model) and this
tree's side by side on 127.0.0.1, and runs wrk against them in turn, round after round, so that the machine's
drift falls on both alike: v1 raw (POST /v1/predict, a 28x28 JSON array) and v2 JSON (784 UINT8 values) at 1 and
16 connections. Prints one table: requests/s per round for each side, the means, and this tree / REV.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.serve_bench import free_port, run_wrk, start, stop

REPO = Path(__file__).resolve().parents[1]
MODEL = Path("models") / "mnist-0to4"


def bodies(model_name: str) -> dict[str, tuple[str, bytes]]:
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 255
    v2 = {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": digit.ravel().tolist()}]}
    return {"v1 raw": ("/v1/predict", json.dumps({"image": digit.tolist()}).encode()),
            "v2 JSON": (f"/v2/models/{model_name}/infer", json.dumps(v2).encode())}


def serve(tree: Path, port: int, pythonpath: str | None) -> subprocess.Popen:
    env = {"OPENSET_MODEL_DIR": str(tree / MODEL), "OPENSET_PORT": str(port), "OPENSET_LOG_LEVEL": "warning"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return start([str(Path(sys.executable).parent / "openset-serve")], env, f"http://127.0.0.1:{port}/v2/health/ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare with (e.g. HEAD~1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    name = json.loads((REPO / MODEL / "model.json").read_text())["name"]
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(other), args.rev],
                       check=True, capture_output=True)
        servers = {}
        try:
            servers = {args.rev: (serve(other, port := free_port(), str(other)), port),
                       "this tree": (serve(REPO, port2 := free_port(), os.environ.get("PYTHONPATH")), port2)}
            rows: dict[tuple[str, str, int], list[float]] = {}
            for _ in range(args.rounds):
                for side, (_, port) in servers.items():
                    for case, (path, body) in bodies(name).items():
                        for connections in (1, 16):
                            result = run_wrk(f"http://127.0.0.1:{port}{path}", body, "application/json",
                                             connections, args.seconds, Path(tmp))
                            rows.setdefault((case, side, connections), []).append(result["rps"])
        finally:
            for process, _ in servers.values():
                stop(process)
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(other)], capture_output=True)
    print(f"| case | connections | {args.rev} requests/s (mean; rounds) | this tree | this tree / {args.rev} |")
    print("|---|---|---|---|---|")
    for case in bodies(name):
        for connections in (1, 16):
            before, after = rows[(case, args.rev, connections)], rows[(case, "this tree", connections)]
            shown = [f"{np.mean(v):.0f} ({', '.join(f'{x:.0f}' for x in v)})" for v in (before, after)]
            print(f"| {case} | {connections} | {shown[0]} | {shown[1]} | {np.mean(after) / np.mean(before):.3f} |")


if __name__ == "__main__":
    main()
