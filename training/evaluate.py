"""Open-set evaluation of the shipped decision (``openset evaluate``).

``shipped_metrics`` measures the decision from the ONNX contract's outputs alone. ``main``
re-measures a model directory independently with ONNX Runtime (no torch, no checkpoint: it runs
on a serving install) and checks the figures recorded in its ``model.json``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from openset import metrics
from openset.artifacts import ArtifactError, atomic_write_json
from openset.calibration import UNKNOWN, decide
from openset.config import DataConfig
from openset.contract import UNKNOWN_LABEL
from openset.data import DATA_DIR_HELP, Split, load_dataset, test_sets, uniform_noise
from openset.manifest import MANIFEST, ModelManifest, load_artifact

NOISE_SAMPLES = 10000
NOISE_SEED = 12345


def unknown_sets(dataset: str, test_unknown: Split, known_classes: tuple[int, ...], root, side: int = 28
                 ) -> dict[str, Split]:
    """The evaluation unknowns: the other classes of the test set, the other dataset's test set, KMNIST's test set
    (cursive Japanese characters: letters no model here has seen), noise of the images' ``side``. Never used for a
    choice."""
    other = "fashion_mnist" if dataset == "mnist" else "mnist"
    rest = sorted(set(range(10)) - set(known_classes))
    return {
        f"{dataset}_{'_'.join(map(str, rest))}": test_unknown,
        other: load_dataset(other, train=False, root=root),
        "kmnist": load_dataset("kmnist", train=False, root=root),
        "uniform_noise": uniform_noise(NOISE_SAMPLES, NOISE_SEED, side),
    }


def shipped_metrics(
    known: dict[str, np.ndarray],
    known_labels: np.ndarray,
    unknowns: dict[str, dict[str, np.ndarray]],
    threshold: float,
    class_names: list[str],
) -> dict:
    """Figures of the shipped decision, from contract outputs (``probs`` and ``score``) only.

    The first unknown set is the headline one: the 6-way report is knowns + that set.
    """
    labels = [*class_names, UNKNOWN_LABEL]
    other = len(class_names)
    known_pred = decide(known["probs"], known["score"], threshold)
    correct = known["probs"].argmax(1) == known_labels
    result: dict = {
        "threshold": float(threshold),
        "known_accuracy": float(correct.mean()),
        "known_accepted": float((known_pred != UNKNOWN).mean()),
        "unknown": {},
    }
    for i, (set_name, out) in enumerate(unknowns.items()):
        pred = decide(out["probs"], out["score"], threshold)
        result["unknown"][set_name] = {
            **metrics.detection_metrics(known["score"], out["score"]),
            "oscr": metrics.oscr(known["score"], correct, out["score"]),
            "accepted": float((pred != UNKNOWN).mean()),
        }
        if i == 0:
            y_true = np.concatenate([known_labels, np.full(len(pred), other)])
            decided = np.concatenate([known_pred, pred])
            y_pred = np.where(decided == UNKNOWN, other, decided)
            result["open_set_classification"] = {"unknown_set": set_name,
                                                 **metrics.classification_metrics(y_true, y_pred, labels)}
    return result


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Re-measure a model directory with ONNX Runtime on the test data", add_help=add_help
    )
    parser.add_argument("--model", required=True, help="directory with model.onnx and model.json")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="allowed drift from model.json")
    return parser


def main(args: argparse.Namespace) -> dict:
    artifact = load_artifact(args.model)
    manifest = artifact.manifest
    test_known, test_unknown = manifest_test_sets(manifest, args.data_dir)
    known = artifact.run(test_known.images)
    sets = unknown_sets(manifest.provenance.data["dataset"], test_unknown, tuple(manifest.provenance.data[
        "known_classes"]), args.data_dir, manifest.input.side)
    unknowns = {name: artifact.run(split.images) for name, split in sets.items()}
    measured = shipped_metrics(known, test_known.labels, unknowns, manifest.threshold, list(manifest.classes))
    recorded, figures = manifest.metrics, headline(measured)
    if set(recorded) != set(figures):  # e.g. a renamed unknown set: nothing to compare would pass vacuously
        unmatched = ", ".join(sorted(set(recorded) ^ set(figures)))
        raise ArtifactError(f"{artifact.directory / MANIFEST}: its figures and this evaluation's are not the same "
                            f"figures ({unmatched})")
    worst = max(abs(figures[key] - recorded[key]) for key in recorded)
    print(json.dumps({"measured": figures, "max_drift_from_model_json": worst}, indent=2))
    if args.out:
        atomic_write_json(args.out, measured)
    if worst > args.tolerance:
        raise SystemExit(f"figures drift from model.json by {worst:.2e} (> {args.tolerance})")
    return measured


def manifest_test_sets(manifest: ModelManifest, root) -> tuple[Split, Split]:
    """The test splits a model was evaluated on (its manifest's dataset and known classes), at its input side."""
    data = manifest.provenance.data
    known, unknown = test_sets(DataConfig(dataset=data["dataset"], known_classes=data["known_classes"]), root)
    side = manifest.input.side
    if known.images.shape[-1] != side:
        raise ArtifactError(f"the model takes {side}x{side} images; {data['dataset']} under the data root has "
                            f"{known.images.shape[-1]}x{known.images.shape[-1]}")
    return known, unknown


def headline(shipped: dict) -> dict[str, float]:
    """The few numbers that go into ``model.json`` and the README."""
    out = {"known_accuracy": shipped["known_accuracy"], "known_accepted": shipped["known_accepted"],
           "macro_f1_open_set": shipped["open_set_classification"]["macro"]["f1"],
           "accuracy_open_set": shipped["open_set_classification"]["accuracy"]}
    for set_name, figures in shipped["unknown"].items():
        out[f"auroc_{set_name}"] = figures["auroc"]
        out[f"fpr95_{set_name}"] = figures["fpr_at_95tpr"]
    return out
