"""Thresholds, picked on known-class validation scores only, and the decision rule.

Decision rule (the one the ONNX consumers apply too): a sample is *known* iff
``score >= threshold``; then its label is the argmax class, else ``UNKNOWN``.
numpy only, so the serving path can import it without torch.
"""

from __future__ import annotations

import numpy as np

UNKNOWN = -1
RULE = "known if score >= threshold, then argmax(probs); else 'other'"


def threshold_at_tpr(known_scores: np.ndarray, target_tpr: float = 0.95) -> float:
    """The largest threshold that still accepts at least ``target_tpr`` of ``known_scores``.

    Only known-class scores go in: no unknown sample ever influences the threshold.
    """
    scores = np.sort(np.asarray(known_scores, dtype=np.float64))
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("threshold_at_tpr needs a non-empty array of finite scores")
    if not 0.0 < target_tpr <= 1.0:
        raise ValueError(f"target_tpr must be in (0, 1], got {target_tpr}")
    # Accepting scores[i:] keeps n - i samples; the largest i with n - i >= tpr * n.
    index = int(np.floor(scores.size * (1.0 - target_tpr) + 1e-9))
    return float(scores[min(index, scores.size - 1)])


def decide(probs: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    """Class index per sample, or :data:`UNKNOWN` where ``score < threshold``."""
    return np.where(np.asarray(score) >= threshold, np.asarray(probs).argmax(axis=1), UNKNOWN)
