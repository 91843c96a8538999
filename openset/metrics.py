"""Metrics as pure functions over numpy arrays; used by training, evaluation and the shift benchmark.

Convention: ``known_scores`` / ``unknown_scores`` are open-set scores, higher = more known;
known samples are the positive class unless a docstring says otherwise.

numpy only, on purpose: ``openset evaluate`` re-measures a model on a serving install (ONNX Runtime,
no torch, no scikit-learn). Each function follows scikit-learn's definition of the same name
(``roc_curve``, ``roc_auc_score``, ``average_precision_score``, ``precision_recall_fscore_support``
with ``zero_division=0``, ``confusion_matrix``); ``tests/test_metrics.py`` checks them against
scikit-learn on tied and untied data.
"""

from __future__ import annotations

import numpy as np

from openset.calibration import threshold_at_tpr


def _curve(known_scores: np.ndarray, unknown_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at every distinct threshold, highest first (knowns positive)."""
    scores = np.concatenate([known_scores, unknown_scores]).astype(np.float64)
    positive = np.concatenate([np.ones(len(known_scores)), np.zeros(len(unknown_scores))])
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last_of_each = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tps = np.cumsum(positive)[last_of_each]
    return tps, (1 + last_of_each) - tps


def roc_curve(known_scores: np.ndarray, unknown_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates, from (0, 0) to (1, 1)."""
    tps, fps = _curve(known_scores, unknown_scores)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    fpr, tpr = roc_curve(known_scores, unknown_scores)
    return float(np.trapezoid(tpr, fpr))


def _average_precision(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    tps, fps = _curve(positive_scores, negative_scores)
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Average precision with the known samples as positives."""
    return _average_precision(known_scores, unknown_scores)


def aupr_out(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Average precision with the unknown samples as positives (scores negated)."""
    return _average_precision(-np.asarray(unknown_scores), -np.asarray(known_scores))


def fpr_at_tpr(known_scores: np.ndarray, unknown_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknowns accepted at the largest threshold that accepts ``tpr`` of the knowns."""
    return float(np.mean(np.asarray(unknown_scores) >= threshold_at_tpr(known_scores, tpr)))


def detection_metrics(known_scores: np.ndarray, unknown_scores: np.ndarray) -> dict[str, float]:
    return {
        "auroc": auroc(known_scores, unknown_scores),
        "aupr_in": aupr_in(known_scores, unknown_scores),
        "aupr_out": aupr_out(known_scores, unknown_scores),
        "fpr_at_95tpr": fpr_at_tpr(known_scores, unknown_scores, 0.95),
    }


def oscr(
    known_scores: np.ndarray,
    known_correct: np.ndarray,
    unknown_scores: np.ndarray,
) -> float:
    """Area under the open-set classification rate curve (Dhamija et al. 2018).

    Sweeping the threshold, x = fraction of unknowns accepted, y = fraction of knowns both
    accepted and correctly classified; ``known_correct`` marks argmax == label.
    """
    scores = np.concatenate([known_scores, unknown_scores])
    order = np.argsort(-scores, kind="stable")
    is_known = np.concatenate([np.ones(len(known_scores)), np.zeros(len(unknown_scores))])[order]
    correct = np.concatenate([known_correct, np.zeros(len(unknown_scores))])[order]
    ccr = np.concatenate([[0.0], np.cumsum(correct) / len(known_scores)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - is_known) / len(unknown_scores)])
    return float(np.trapezoid(ccr, fpr))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, per-class and macro precision/recall/F1 and the confusion matrix.

    ``y_true`` / ``y_pred`` are indices into ``labels`` (the open-set label "other" included).
    """
    size = len(labels)
    confusion = np.bincount(np.asarray(y_true) * size + np.asarray(y_pred), minlength=size * size).reshape(size, size)
    hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    precision, recall = _ratio(hits, predicted), _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {
        "accuracy": float(hits.sum() / confusion.sum()),
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": confusion.tolist(),
    }
