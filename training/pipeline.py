"""After training, one straight path: fit the scores → export (``export.weights``) → calibrate the stored graph →
evaluate → package.

Each data split passes once through each model that reads it (torch for the scores side by side, the stored graph
for the threshold and the shipped figures); :func:`package` is the only writer of an artefact directory, and
writes it atomically. Layout (``models/mnist-0to4``)::

    model.onnx       the contract graph (openset.contract), the manifest (without its hash) in metadata_props
    model.json       the manifest (openset.manifest.ModelManifest): classes, tensors, decision, figures, provenance
    checkpoint.pt    torch weights + config + history (training.checkpoints; for ``openset export``)
    report.json      every figure; report.md the same for people; figures/*.png
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

import openset
from openset import metrics, plots
from openset.artifacts import atomic_write_bytes, atomic_write_json, staged_directory
from openset.augment import augment_once
from openset.calibration import RULE, UNKNOWN, decide, threshold_at_tpr
from openset.config import Config
from openset.contract import INPUT, OUTPUTS, SCORE, UNKNOWN_LABEL, layout, tensor_specs
from openset.data import OpenSetData, Split
from openset.export import ExportModule, export_graph, quantize, with_metadata
from openset.manifest import FORMAT_VERSION, GRAPH, MANIFEST, Layout, ModelManifest, run_session
from openset.models import extract_features
from openset.scores import Detector, fit_scores
from training import robustness
from training.checkpoints import model_checkpoint
from training.evaluate import headline, shipped_metrics, unknown_sets
from training.printed import printed_check
from training.report import render_report

PARITY_TOLERANCE = 1e-4  # float32 graph against torch, every output
QUANTIZED_AGREEMENT = 0.99  # 8-bit weights: the least share of test images decided as torch's float32 decides
BATCH_TOLERANCE = 1e-5  # an image's outputs alone against the same image's in a shared call (adaptive batching)
BATCH_PROBE = 64  # test images the export runs one by one and together


@dataclass(frozen=True)
class Calibration:
    threshold: float
    val_accepted: float  # the share of the clean known validation digits the threshold accepts


@dataclass(frozen=True)
class Evaluation:
    sets: dict[str, Split]  # the unknown test sets, by name
    scores: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]  # every score: (knowns, {unknown set: values})
    known_out: dict[str, np.ndarray]  # the stored graph's contract outputs on the known test digits
    unknown_out: dict[str, dict[str, np.ndarray]]  # ... and on every unknown set
    shipped: dict  # the shipped decision's figures (training.evaluate.shipped_metrics)
    parity: dict  # the stored graph (ONNX Runtime) against torch on every test image


def fit_detectors(cfg: Config, model: torch.nn.Module, train: Split) -> dict[str, Detector]:
    """Every score fitted on the known training digits; the graph computes ``combined``."""
    return fit_scores(cfg.scores, cfg.seed, extract_features(model, train.images), train.labels)


def calibration_scores(score: Callable[[np.ndarray], np.ndarray], cfg: Config, val: Split) -> np.ndarray:
    """The scores the threshold is set on (``score``: images to decision scores): known validation digits, and with
    ``clean+augmented`` the same digits once more, changed by the training augmentation (seeded)."""
    scores = score(val.images)
    if cfg.scores.calibration == "clean+augmented":
        scores = np.concatenate([scores, score(augment_once(val.images, cfg.augment, cfg.seed))])
    return scores


def calibrate(score: Callable[[np.ndarray], np.ndarray], cfg: Config, val: Split) -> Calibration:
    """The threshold, on known validation digits only (``score``: the model that will decide, images to scores)."""
    scores = calibration_scores(score, cfg, val)  # the clean validation digits first
    threshold = threshold_at_tpr(scores, cfg.scores.target_tpr)
    return Calibration(threshold, float(np.mean(scores[: len(val)] >= threshold)))


def check_parity(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], threshold: float, weights: str) -> dict:
    """The stored graph's outputs (``theirs``, ONNX Runtime) against torch's (``ours``) on the same images. A float32
    graph must agree to :data:`PARITY_TOLERANCE` with identical decisions at the threshold; 8-bit weights move the
    values, so their drift is recorded and only a broken graph (decisions agreeing below
    :data:`QUANTIZED_AGREEMENT`) fails."""
    diff = {name: float(np.abs(ours[name] - theirs[name]).max()) for name in OUTPUTS}
    same = decide(ours["probs"], ours["score"], threshold) == decide(theirs["probs"], theirs["score"], threshold)
    agree = float(np.mean(same))
    if weights == "float32":
        broken = max(diff.values()) > PARITY_TOLERANCE or agree < 1.0
    else:
        broken = agree < QUANTIZED_AGREEMENT
    if broken:
        raise RuntimeError(f"ONNX parity failed ({weights} weights): max abs diff {diff}, decisions agreeing {agree}")
    return {"samples": len(same), "weights": weights, "max_abs_diff": diff, "identical_decisions": bool(same.all()),
            "decisions_agreeing": agree}


def check_batch_invariance(served: Callable[[np.ndarray], dict[str, np.ndarray]], images: np.ndarray) -> float:
    """The largest change of any output between each image run alone and all of ``images`` in one call: the
    service batches concurrent clients' images together, so one client's image must not move another's answer.
    Raises above :data:`BATCH_TOLERANCE`."""
    together = served(images)
    alone = [served(images[i : i + 1]) for i in range(len(images))]
    spread = max(float(np.abs(np.concatenate([a[name] for a in alone]) - together[name]).max()) for name in together)
    if spread > BATCH_TOLERANCE:
        raise RuntimeError(f"the graph's outputs depend on the batch: an image alone and in a call of {len(images)} "
                           f"differ by {spread:.2e} (at most {BATCH_TOLERANCE:.0e})")
    return spread


def served_outputs(session: ort.InferenceSession) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Images to every contract output of the stored graph (ONNX Runtime): what the service will answer."""
    return lambda images: run_session(session, INPUT, list(OUTPUTS), images)


def evaluate(module: ExportModule, detectors: dict[str, Detector], session: ort.InferenceSession,
             data: OpenSetData, sets: dict[str, Split], threshold: float, weights: str) -> Evaluation:
    """Every score on the test sets side by side, each set through the torch model once; the shipped decision's
    figures from the stored graph (ONNX Runtime) on the same images, checked against torch's outputs."""
    known_feats = extract_features(module.model, data.test_known.images)
    unknown_feats = {name: extract_features(module.model, split.images) for name, split in sets.items()}
    scores = {name: (det.score_features(known_feats), {n: det.score_features(f) for n, f in unknown_feats.items()})
              for name, det in detectors.items()}
    served = served_outputs(session)
    known_out = served(data.test_known.images)
    unknown_out = {name: served(split.images) for name, split in sets.items()}
    shipped = shipped_metrics(known_out, data.test_known.labels, unknown_out, threshold,
                              [str(c) for c in data.classes])
    ours = [module.outputs(known_feats), *(module.outputs(feats) for feats in unknown_feats.values())]
    joined = lambda outs: {name: np.concatenate([out[name] for out in outs]) for name in OUTPUTS}  # noqa: E731
    parity = {**check_parity(joined(ours), joined([known_out, *unknown_out.values()]), threshold, weights),
              "batch_spread": check_batch_invariance(served, data.test_known.images[:BATCH_PROBE])}
    return Evaluation(sets, scores, known_out, unknown_out, shipped, parity)


def score_table(scores: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[str, dict[str, dict]]:
    """``table[score][unknown_set]`` = AUROC, AUPR-in, AUPR-out, FPR@95%TPR."""
    return {name: {set_name: metrics.detection_metrics(known, values) for set_name, values in unknowns.items()}
            for name, (known, unknowns) in scores.items()}


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """One progress line per long step after training, as the epochs have: ``name ... 12.3 s``."""
    print(f"{name} ...", end="", flush=True)
    start = time.perf_counter()
    yield
    print(f" {time.perf_counter() - start:.1f} s", flush=True)


def describe(cfg: Config, data: OpenSetData, module: ExportModule, calibration: Calibration, evaluation: Evaluation,
             graph: onnx.ModelProto) -> tuple[ModelManifest, bytes]:
    """The manifest and the graph's bytes, which carry the manifest (but its hash) in their metadata."""
    side = data.test_known.images.shape[-1]
    image, outputs = tensor_specs(len(data.classes), side, module.distance_measures)
    protocol = ("supervised: the known head saw training images of the unknown classes"
                if cfg.negatives.labelled_supervised else "honest: unknown classes never used before evaluation")
    fields = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "version": f"{openset.__version__}+seed{cfg.seed}",
        "classes": [str(c) for c in data.classes],
        "unknown_label": UNKNOWN_LABEL,
        "input": image,
        "outputs": outputs,
        "decision": {"output": SCORE, "threshold": calibration.threshold, "target_tpr": cfg.scores.target_tpr,
                     "rule": RULE},
        "metrics": headline(evaluation.shipped),
        "provenance": {
            "protocol": protocol,
            "config": cfg.to_dict(),
            "data": {"dataset": cfg.data.dataset, "known_classes": list(data.classes), "train": len(data.train),
                     "val": len(data.val), "test_known": len(data.test_known),
                     "unknown_sets": {k: len(v) for k, v in evaluation.sets.items()}},
            "versions": {"openset": openset.__version__, "torch": torch.__version__,
                         "torchvision": torchvision.__version__, "onnxruntime": ort.__version__,
                         "python": platform.python_version()},
        },
    }
    graph_bytes = with_metadata(graph, fields)
    return ModelManifest.model_validate({**fields, "onnx_sha256": hashlib.sha256(graph_bytes).hexdigest()}), graph_bytes


def package(out: Path, manifest: ModelManifest, graph: bytes, checkpoint: bytes, report: dict,
            figures: Callable[[Path], dict[str, str]] | None) -> Path:
    """The only writer of an artefact directory: every file staged, then swapped in at once."""
    with staged_directory(out) as stage:
        atomic_write_bytes(stage / GRAPH, graph)
        atomic_write_json(stage / MANIFEST, manifest.model_dump(mode="json"))
        atomic_write_bytes(stage / "checkpoint.pt", checkpoint)
        if figures is not None:
            report = {**report, "figures": figures(stage / "figures")}
        atomic_write_json(stage / "report.json", report)
        atomic_write_bytes(stage / "report.md", render_report(report).encode())
    return out


def write_artifacts(
    out: Path, cfg: Config, model: torch.nn.Module, history: list[dict], data: OpenSetData,
    root: str | None, plots_enabled: bool = True,
) -> Path:
    """Everything after training: fit the scores, calibrate, export, evaluate, package. The directory depends only
    on the config, the data and the code (no clock times, no paths), so re-creating a model from its config leaves
    the files as they were."""
    side = data.train.images.shape[-1]
    with phase("fitting the scores on the known training digits"):
        detectors = fit_detectors(cfg, model, data.train)
        module = ExportModule(model, detectors["combined"])
    with phase("exporting ONNX" + ("" if cfg.export.weights == "float32" else f" ({cfg.export.weights} weights)")):
        graph = quantize(export_graph(module, side), cfg.export.weights)
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        served = served_outputs(session)
    with phase("calibrating the threshold on the known validation digits"):
        calibration = calibrate(lambda images: served(images)[SCORE], cfg, data.val)
    with phase("evaluating every score on the test sets, and ONNX against torch"):
        sets = unknown_sets(cfg.data.dataset, data.test_unknown, data.classes, root, side)
        evaluation = evaluate(module, detectors, session, data, sets, calibration.threshold, cfg.export.weights)
    shifted, per_class = None, cfg.evaluation.shift_per_class
    if per_class:
        with phase("shift benchmark: test digits as people's pictures, through the service's preprocessing"):
            shifted = robustness.shift_benchmark(
                served, calibration.threshold,
                robustness.balanced(data.test_known, per_class, seed=0),
                robustness.balanced(data.test_unknown, per_class, seed=0), layout=Layout(**layout(side)))
    with phase("printed check: letters and known digits in fonts training never saw"):
        printed = printed_check(served, calibration.threshold, data.classes, [str(c) for c in data.classes],
                                Layout(**layout(side)))
    manifest, graph_bytes = describe(cfg, data, module, calibration, evaluation, graph)
    class_names = list(manifest.classes)
    report = {
        "name": cfg.name, "protocol": manifest.provenance.protocol, "classes": class_names,
        "threshold": calibration.threshold, "target_tpr": cfg.scores.target_tpr,
        "val_accepted": calibration.val_accepted,
        "shipped": evaluation.shipped, "scores": score_table(evaluation.scores), "parity": evaluation.parity,
        "robustness": shifted, "printed": printed, "history": history, "config": cfg.to_dict(),
    }
    figures = (lambda folder: _figures(folder, calibration.threshold, history, data, evaluation, class_names,
                                       shifted)) if plots_enabled else None
    with phase("writing the artefact, report and figures"):
        package(out, manifest, graph_bytes, model_checkpoint(cfg, model, history, side), report, figures)
    shown = {k: v for k, v in manifest.metrics.items() if k.startswith(("known_acc", "auroc", "macro"))}
    print(f"wrote {out}  (threshold {calibration.threshold:.4f}; "
          + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()) + ")")
    return out


def _figures(folder: Path, threshold: float, history, data: OpenSetData, evaluation: Evaluation, class_names,
             shifted: dict | None) -> dict[str, str]:
    scores, known_out, unknown_out = evaluation.scores, evaluation.known_out, evaluation.unknown_out
    figures = {"learning_curves": plots.learning_curves(history, folder / "learning_curves.png")}
    for set_name in unknown_out:
        pairs = {name: (known, unknowns[set_name]) for name, (known, unknowns) in scores.items()}
        figures[f"roc_{set_name}"] = plots.roc_curves(pairs, set_name, folder / f"roc_{set_name}.png")
    figures["score_histograms"] = plots.score_histograms(
        known_out["score"], {k: v["score"] for k, v in unknown_out.items()}, threshold,
        folder / "score_histograms.png")
    cm = evaluation.shipped["open_set_classification"]
    figures["confusion_matrix"] = plots.confusion(cm["confusion_matrix"], cm["labels"], folder / "confusion_matrix.png")
    # The seed's data preview: ten training images per known class.
    picks = np.concatenate([np.nonzero(data.train.labels == c)[0][:10] for c in range(len(class_names))])
    figures["samples"] = plots.image_grid(data.train.images[picks],
                                          [class_names[data.train.labels[i]] for i in picks], folder / "samples.png")
    figures["worst_mistakes"] = plots.image_grid(*_worst_mistakes(data, known_out, unknown_out, threshold,
                                                                  class_names), folder / "worst_mistakes.png")
    if shifted:
        digit = data.test_known.images[np.argmax(data.test_known.labels == 2), 0]
        figures["shift_examples"] = plots.shift_examples(robustness.examples(digit), folder / "shift_examples.png")
        figures["shift_bars"] = plots.shift_bars(shifted, folder / "shift_bars.png")
    return {name: str(path.relative_to(folder.parent)) for name, path in figures.items()}


def _worst_mistakes(data, known_out, unknown_out, threshold, class_names, per_kind: int = 10):
    """Knowns rejected or misclassified with the most confidence, and the best-scored accepted unknowns."""
    first_set = next(iter(unknown_out))
    unknown_images = data.test_unknown.images
    known_pred = decide(known_out["probs"], known_out["score"], threshold)
    labels = data.test_known.labels
    wrong = np.nonzero(known_pred != labels)[0]
    wrong = wrong[np.argsort(-np.abs(known_out["score"][wrong] - threshold))][:per_kind]
    accepted = np.argsort(-unknown_out[first_set]["score"])[:per_kind]
    name = lambda p: UNKNOWN_LABEL if p == UNKNOWN else class_names[p]  # noqa: E731
    images = np.concatenate([data.test_known.images[wrong], unknown_images[accepted]])
    titles = [f"{class_names[labels[i]]}→{name(known_pred[i])}" for i in wrong]
    unknown_pred = decide(unknown_out[first_set]["probs"], unknown_out[first_set]["score"], threshold)
    titles += [f"{int(data.test_unknown.labels[i])}→{name(unknown_pred[i])}" for i in accepted]
    return images, titles
