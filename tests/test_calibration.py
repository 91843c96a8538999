import numpy as np
import pytest

from openset.calibration import UNKNOWN, decide, threshold_at_tpr


@pytest.mark.parametrize("tpr", [0.5, 0.9, 0.95, 0.99])
def test_threshold_accepts_at_least_the_target_and_is_the_largest_such(tpr):
    scores = np.random.default_rng(0).normal(size=1001)
    t = threshold_at_tpr(scores, tpr)
    assert np.mean(scores >= t) >= tpr
    higher = np.sort(scores)[np.sort(scores) > t]
    assert higher.size == 0 or np.mean(scores >= higher[0]) < tpr


def test_threshold_rejects_bad_input():
    with pytest.raises(ValueError):
        threshold_at_tpr(np.array([]), 0.95)
    with pytest.raises(ValueError):
        threshold_at_tpr(np.array([0.0, np.nan]), 0.95)
    with pytest.raises(ValueError):
        threshold_at_tpr(np.array([0.0, 1.0]), 0.0)


def test_decision_is_score_at_least_threshold_then_argmax():
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4]])
    score = np.array([0.5, 0.49, 0.7])
    assert decide(probs, score, 0.5).tolist() == [1, UNKNOWN, 0]
