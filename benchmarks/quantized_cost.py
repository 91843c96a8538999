"""Benchmark: what 8-bit weights save on the model call, and how far they move its outputs (known digits only).

    .venv/bin/python benchmarks/quantized_cost.py [--model models/mnist-0to4] [--calls 1500]

Builds the float32 graph of the model's checkpoint as the export does (the scores refitted on the known training
digits), quantizes its weights for each ``export.weights`` (``openset.export.quantize``, in memory; nothing in the
model directory changes) and prints one table: the p50 of one image's model call hot (a loop that calls only the
model) and under memory pressure (32 MB of other memory read between calls, as a server's other work evicts the
weights), the graph's size, and against the float32 graph on the known-class validation split (digits 0-4 only;
the unknown digits are never read here): class agreement, the decision score's change, and the decisions that
change at the model's threshold. The figures behind E17 and E18 (docs/experiments.md), where the export itself
quantizes and the threshold is calibrated on the quantized graph.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from openset.data import open_set_data
from openset.export import WEIGHTS, ExportModule, export_graph, quantize
from openset.manifest import MANIFEST, read_manifest
from training.checkpoints import load_model
from training.pipeline import fit_detectors

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
                        help="a model directory (its checkpoint.pt and threshold)")
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    if not (args.model / "checkpoint.pt").is_file():
        parser.error(f"{args.model} has no checkpoint.pt: pass a model directory written by openset train or export")
    manifest = read_manifest(args.model / MANIFEST)
    cfg, model, _ = load_model(args.model / "checkpoint.pt")
    data = open_set_data(cfg.data, cfg.seed)
    images = data.val.images.astype(np.float32)  # known classes only
    other = np.random.default_rng(0).random(4_000_000)  # 32 MB
    output = manifest.decision.output
    float32 = export_graph(ExportModule(model, fit_detectors(cfg, model, data.train)["combined"]), images.shape[-1])
    reference = None
    print(f"known-class validation images: {len(images)}; the model's threshold {manifest.threshold:.4f} "
          f"({cfg.export.weights} weights)")
    print("| graph | MB | p50 µs hot | p50 µs, 32 MB read between calls | class agreement "
          "| score change, median / max | decisions changed |")
    print("|---|---|---|---|---|---|---|")
    for weights in WEIGHTS:  # float32 (the graph as it is) first: the reference
        graph = quantize(float32, weights).SerializeToString()
        call = session(graph)
        probs, score = call.run(["probs", output], {call.get_inputs()[0].name: images})
        accepted = score >= manifest.threshold
        if reference is None:
            reference = probs.argmax(1), score, accepted
        change = np.abs(score - reference[1])
        hot = call_p50(call, images[:1], args.calls, None)
        pressed = call_p50(call, images[:1], args.calls, other)
        print(f"| {weights} | {len(graph) / 1e6:.1f} | {hot:.0f} | {pressed:.0f} "
              f"| {np.mean(probs.argmax(1) == reference[0]):.4f} "
              f"| {np.median(change):.4f} / {change.max():.4f} | {np.mean(accepted != reference[2]):.4f} |")


if __name__ == "__main__":
    main()
