"""Metrics as pure functions over arrays, wrapping ``sklearn.metrics``; used by training and evaluation.

Convention: ``known_scores`` / ``unknown_scores`` are open-set scores, higher = more known;
known samples are the positive class unless a docstring says otherwise.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _binary(known_scores: np.ndarray, unknown_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.ones(len(known_scores)), np.zeros(len(unknown_scores))])
    return y, np.concatenate([known_scores, unknown_scores]).astype(np.float64)


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    y, s = _binary(known_scores, unknown_scores)
    return float(skm.roc_auc_score(y, s))


def aupr_in(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Average precision with the known samples as positives."""
    y, s = _binary(known_scores, unknown_scores)
    return float(skm.average_precision_score(y, s))


def aupr_out(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Average precision with the unknown samples as positives (scores negated)."""
    y, s = _binary(known_scores, unknown_scores)
    return float(skm.average_precision_score(1 - y, -s))


def fpr_at_tpr(known_scores: np.ndarray, unknown_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknowns accepted at the first ROC point that accepts ``tpr`` of the knowns."""
    y, s = _binary(known_scores, unknown_scores)
    fpr, tprs, _ = skm.roc_curve(y, s)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def roc_curve(known_scores: np.ndarray, unknown_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = _binary(known_scores, unknown_scores)
    fpr, tpr, _ = skm.roc_curve(y, s)
    return fpr, tpr


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
    return float(skm.auc(fpr, ccr))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, per-class and macro precision/recall/F1 and the confusion matrix.

    ``y_true`` / ``y_pred`` are indices into ``labels`` (the open-set label "other" included).
    """
    index = list(range(len(labels)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=index, zero_division=0
    )
    macro = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=index, average="macro", zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro": {"precision": float(macro[0]), "recall": float(macro[1]), "f1": float(macro[2])},
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
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=index).tolist(),
    }
