"""After training: fit the scores, calibrate, evaluate, export and report — into one atomic directory.

Layout of an artefact directory (``models/mnist-0to4``)::

    model.onnx       the contract graph (openset.contract), metadata in metadata_props
    model.json       classes, threshold and rule, normalisation, config, data, metrics, SHA-256
    checkpoint.pt    torch weights + config + history (for ``openset export`` / retraining)
    report.json      every figure; report.md the same for people; figures/*.png
"""

from __future__ import annotations

import contextlib
import io
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision

import openset
from openset import metrics, plots
from openset.artifacts import atomic_write_bytes, atomic_write_json, staged_directory
from openset.augment import augment_once
from openset.calibration import RULE, UNKNOWN, decide, threshold_at_tpr
from openset.config import Config
from openset.contract import FORMAT_VERSION, INPUT, LAYOUT, OUTPUTS, UNKNOWN_LABEL
from openset.data import OpenSetData
from openset.export import ExportModule, export_onnx, run_torch, write_model_json
from openset.models import extract_features
from openset.scores import Detector, Features, fit_detectors
from training import robustness
from training.evaluate import headline, run_onnx, shipped_metrics, unknown_sets
from training.report import render_report

PARITY_TOLERANCE = 1e-4


@dataclass
class FittedScores:
    detectors: dict[str, Detector]
    threshold: float
    module: ExportModule
    val_accepted: float  # the share of the clean known validation digits the threshold accepts


def fit_scores(model: torch.nn.Module, cfg: Config, data: OpenSetData) -> FittedScores:
    """Fit every score on known training features; threshold on known validation data only."""
    train_feats = extract_features(model, data.train.images)
    detectors = fit_detectors(cfg.scores, cfg.seed, train_feats, data.train.labels)
    module = ExportModule(model, detectors["combined"], detectors["centroid"])
    scores = calibration_scores(module, cfg, data)  # the clean validation digits first
    threshold = threshold_at_tpr(scores, cfg.scores.target_tpr)
    return FittedScores(detectors, threshold, module, float(np.mean(scores[: len(data.val)] >= threshold)))


def calibration_scores(module: ExportModule, cfg: Config, data: OpenSetData) -> np.ndarray:
    """The scores the threshold is set on: known validation digits, and with ``clean+augmented`` the same digits
    once more, changed by the training augmentation (seeded)."""
    scores = run_torch(module, data.val.images)["score"]
    if cfg.scores.calibration == "clean+augmented":
        changed = augment_once(data.val.images, cfg.augment, cfg.seed)
        scores = np.concatenate([scores, run_torch(module, changed)["score"]])
    return scores


def check_parity(session: ort.InferenceSession, module: ExportModule, images: np.ndarray, threshold: float) -> dict:
    """ONNX Runtime vs torch on every output; identical decisions at the threshold."""
    ours, theirs = run_torch(module, images), run_onnx(session, images)
    diff = {name: float(np.abs(ours[name] - theirs[name]).max()) for name in OUTPUTS}
    same = bool(np.array_equal(decide(ours["probs"], ours["score"], threshold),
                               decide(theirs["probs"], theirs["score"], threshold)))
    if max(diff.values()) > PARITY_TOLERANCE or not same:
        raise RuntimeError(f"ONNX parity failed: max abs diff {diff}, identical decisions {same}")
    return {"samples": len(images), "max_abs_diff": diff, "identical_decisions": same}


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """One progress line per long step after training, as the epochs have: ``name ... 12.3 s``."""
    print(f"{name} ...", end="", flush=True)
    start = time.perf_counter()
    yield
    print(f" {time.perf_counter() - start:.1f} s", flush=True)


def every_score(detectors: dict[str, Detector], known: Features, unknowns: dict[str, Features]
                ) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """``scores[score] = (known scores, {unknown set: scores})``: every detector on every set, once."""
    return {name: (det.score_features(known), {set_name: det.score_features(f) for set_name, f in unknowns.items()})
            for name, det in detectors.items()}


def score_table(scores: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[str, dict[str, dict]]:
    """``table[score][unknown_set]`` = AUROC, AUPR-in, AUPR-out, FPR@95%TPR."""
    return {name: {set_name: metrics.detection_metrics(known, values) for set_name, values in unknowns.items()}
            for name, (known, unknowns) in scores.items()}


def write_artifacts(
    out: Path, cfg: Config, model: torch.nn.Module, history: list[dict], data: OpenSetData,
    root: str | None, plots_enabled: bool = True,
) -> Path:
    """Everything after training. The directory depends only on the config, the data and the code (no
    clock times, no paths), so re-creating a model from its config leaves the files as they were."""
    with phase("fitting the scores on the known training digits"):
        fitted = fit_scores(model, cfg, data)
    class_names = [str(c) for c in data.classes]
    with phase("evaluating every score on the test sets"):
        sets = unknown_sets(cfg.data.dataset, data.test_unknown, data.classes, root)
        # Every score side by side, from one forward pass per set.
        known_feats = extract_features(model, data.test_known.images)
        unknown_feats = {name: extract_features(model, split.images) for name, split in sets.items()}
        scores = every_score(fitted.detectors, known_feats, unknown_feats)
        table = score_table(scores)
        # The shipped decision, from the contract outputs.
        known_out = run_torch(fitted.module, data.test_known.images)
        unknown_out = {name: run_torch(fitted.module, split.images) for name, split in sets.items()}
        shipped = shipped_metrics(known_out, data.test_known.labels, unknown_out, fitted.threshold, class_names)
    protocol = ("supervised: the known head saw training images of the unknown classes"
                if cfg.negatives.labelled_supervised else "honest: unknown classes never used before evaluation")
    metadata = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "version": f"{openset.__version__}+seed{cfg.seed}",
        "classes": class_names,
        "known_classes": list(data.classes),
        "unknown_label": UNKNOWN_LABEL,
        "threshold": fitted.threshold,
        "score": "score",
        "rule": RULE,
        "target_tpr": cfg.scores.target_tpr,
        "input": {"name": INPUT, "shape": ["N", 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0],
                  "polarity": "white digit on black", "layout": LAYOUT},
        "outputs": list(OUTPUTS),
        "normalization": cfg.model.normalization.model_dump(),
        "protocol": protocol,
        "metrics": headline(shipped),
        "data": {"dataset": cfg.data.dataset, "train": len(data.train), "val": len(data.val),
                 "test_known": len(data.test_known), "unknown_sets": {k: len(v) for k, v in sets.items()}},
        "versions": {"openset": openset.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "onnxruntime": ort.__version__,
                     "python": platform.python_version()},
        "config": cfg.to_dict(),
    }
    with staged_directory(out) as stage:
        with phase("exporting ONNX and checking it against torch"):
            sha = export_onnx(fitted.module, stage / "model.onnx", metadata)
            session = ort.InferenceSession(str(stage / "model.onnx"), providers=["CPUExecutionProvider"])
            all_test = np.concatenate([data.test_known.images, data.test_unknown.images])
            parity = check_parity(session, fitted.module, all_test, fitted.threshold)
            write_model_json(stage / "model.json", metadata, sha)
            atomic_write_bytes(stage / "checkpoint.pt", _checkpoint_bytes(cfg, model, history))
        shifted = None
        per_class = cfg.evaluation.shift_per_class
        if per_class:
            with phase("shift benchmark: test digits as people's pictures, through the service's preprocessing"):
                shifted = robustness.shift_benchmark(
                    lambda images: run_onnx(session, images), fitted.threshold,
                    robustness.balanced(data.test_known, per_class, seed=0),
                    robustness.balanced(data.test_unknown, per_class, seed=0))
        with phase("writing the report and figures"):
            report = {
                "name": cfg.name, "protocol": protocol, "classes": class_names,
                "threshold": fitted.threshold, "target_tpr": cfg.scores.target_tpr,
                "val_accepted": fitted.val_accepted,
                "shipped": shipped, "scores": table, "parity": parity, "robustness": shifted,
                "history": history, "config": cfg.to_dict(),
            }
            if plots_enabled:
                report["figures"] = _figures(stage / "figures", fitted, history, data, scores, known_out,
                                             unknown_out, shipped, class_names, shifted)
            atomic_write_json(stage / "report.json", report)
            atomic_write_bytes(stage / "report.md", render_report(report).encode())
    shown = {k: v for k, v in metadata["metrics"].items() if k.startswith(("known_acc", "auroc", "macro"))}
    figures = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
    print(f"wrote {out}  (threshold {fitted.threshold:.4f}; {figures})")
    return out


def _checkpoint_bytes(cfg: Config, model: torch.nn.Module, history: list[dict]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "history": history}, buffer)
    return buffer.getvalue()


def _figures(folder: Path, fitted: FittedScores, history, data: OpenSetData, scores, known_out, unknown_out,
             shipped, class_names, shifted: dict | None) -> dict[str, str]:
    figures = {"learning_curves": plots.learning_curves(history, folder / "learning_curves.png")}
    for set_name in unknown_out:
        pairs = {name: (known, unknowns[set_name]) for name, (known, unknowns) in scores.items()}
        figures[f"roc_{set_name}"] = plots.roc_curves(pairs, set_name, folder / f"roc_{set_name}.png")
    figures["score_histograms"] = plots.score_histograms(
        known_out["score"], {k: v["score"] for k, v in unknown_out.items()}, fitted.threshold,
        folder / "score_histograms.png")
    cm = shipped["open_set_classification"]
    figures["confusion_matrix"] = plots.confusion(cm["confusion_matrix"], cm["labels"], folder / "confusion_matrix.png")
    # The seed's data preview: ten training images per known class.
    picks = np.concatenate([np.nonzero(data.train.labels == c)[0][:10] for c in range(len(class_names))])
    figures["samples"] = plots.image_grid(data.train.images[picks],
                                          [class_names[data.train.labels[i]] for i in picks], folder / "samples.png")
    figures["worst_mistakes"] = plots.image_grid(*_worst_mistakes(data, known_out, unknown_out, fitted.threshold,
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
