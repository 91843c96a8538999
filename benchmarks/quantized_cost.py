"""Benchmark: what 8-bit weights save on the model call, and how far they move its outputs (known digits only).

    .venv/bin/python benchmarks/quantized_cost.py [--model models/mnist-0to4] [--calls 1500]

Takes a model with a float32 graph (the shipped one), quantizes its graph's weights as ``openset export --set
export.weights=<int8|uint8>`` does (``openset.export.quantize``, in memory; nothing in the model directory
changes) and prints one table: the p50
of one image's model call hot (a loop that calls only the model) and under memory pressure (32 MB of other
memory read between calls, as a server's other work evicts the weights), the graph's size, and against the
float32 graph on the known-class validation split (digits 0-4 only; the unknown digits are never read here):
class agreement, the decision score's change, and the decisions that change at the shipped threshold.
The figures behind E17 (docs/experiments.md), where the export itself quantizes (``export.weights``) and the
threshold is calibrated on the quantized graph; here the float32 graph's threshold is used for all three.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from openset.config import Config
from openset.data import open_set_data
from openset.export import WEIGHTS, quantize
from openset.manifest import GRAPH, MANIFEST, read_manifest

REPO = Path(__file__).resolve().parents[1]


def session(graph: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def call_p50(model: ort.InferenceSession, image: np.ndarray, calls: int, other: np.ndarray | None) -> float:
    """Median µs of one ``run``; with ``other``, that memory is read before each call."""
    name, times = model.get_inputs()[0].name, []
    for _ in range(calls):
        if other is not None:
            other.sum()
        start = time.perf_counter()
        model.run(None, {name: image})
        times.append(time.perf_counter() - start)
    return float(np.median(times[calls // 10:]) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "mnist-0to4",
                        help="a model directory with a float32 graph")
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    manifest = read_manifest(args.model / MANIFEST)
    cfg = Config.model_validate(manifest.provenance.config)
    if cfg.export.weights != "float32":
        print(f"error: {args.model} has {cfg.export.weights} weights already; pass a float32 export (see --help)",
              file=sys.stderr)
        sys.exit(2)
    known = open_set_data(cfg.data, cfg.seed).val  # known classes only
    images = known.images.astype(np.float32)
    other = np.random.default_rng(0).random(4_000_000)  # 32 MB
    output = manifest.decision.output
    served = onnx.load(str(args.model / GRAPH))
    reference = None
    print(f"known-class validation images: {len(images)}; shipped threshold {manifest.threshold:.4f}")
    print("| graph | MB | p50 µs hot | p50 µs, 32 MB read between calls | class agreement "
          "| score change, median / max | decisions changed |")
    print("|---|---|---|---|---|---|---|")
    for weights in WEIGHTS:  # float32 (the graph as it is) first: the reference
        graph = quantize(served, weights).SerializeToString()
        model = session(graph)
        probs, score = model.run(["probs", output], {model.get_inputs()[0].name: images})
        accepted = score >= manifest.threshold
        if reference is None:
            reference = probs.argmax(1), score, accepted
        change = np.abs(score - reference[1])
        hot = call_p50(model, images[:1], args.calls, None)
        pressed = call_p50(model, images[:1], args.calls, other)
        print(f"| {weights} | {len(graph) / 1e6:.1f} | {hot:.0f} | {pressed:.0f} "
              f"| {np.mean(probs.argmax(1) == reference[0]):.4f} "
              f"| {np.median(change):.4f} / {change.max():.4f} | {np.mean(accepted != reference[2]):.4f} |")


if __name__ == "__main__":
    main()
