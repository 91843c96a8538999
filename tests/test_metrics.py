import numpy as np
import pytest

from openset import metrics


def test_perfect_and_reversed_separation():
    known, unknown = np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0])
    assert metrics.auroc(known, unknown) == 1.0
    assert metrics.auroc(unknown, known) == 0.0
    assert metrics.aupr_in(known, unknown) == pytest.approx(1.0)
    assert metrics.aupr_out(known, unknown) == pytest.approx(1.0)
    assert metrics.fpr_at_tpr(known, unknown, 0.95) == 0.0
    assert metrics.fpr_at_tpr(unknown, known, 0.95) == 1.0


def test_fpr_at_tpr_counts_unknowns_above_the_operating_point():
    known = np.arange(100, dtype=float)  # accept 95 of them: threshold at 5
    unknown = np.array([4.0, 6.0, 50.0, -3.0])
    assert metrics.fpr_at_tpr(known, unknown, 0.95) == pytest.approx(0.5)


def test_oscr_is_one_for_perfect_open_set_and_lower_with_misclassified_knowns():
    known, unknown = np.array([2.0, 3.0, 4.0, 5.0]), np.array([0.0, 1.0])
    assert metrics.oscr(known, np.ones(4, bool), unknown) == pytest.approx(1.0)
    assert metrics.oscr(known, np.array([True, True, False, False]), unknown) == pytest.approx(0.5)
    # Unknowns ranked above every known: the curve stays at zero until all unknowns are accepted.
    assert metrics.oscr(unknown, np.ones(2, bool), known) == pytest.approx(0.0)


def test_classification_metrics_include_other():
    labels = ["0", "1", "other"]
    y_true = np.array([0, 0, 1, 2, 2])
    y_pred = np.array([0, 2, 1, 2, 0])
    out = metrics.classification_metrics(y_true, y_pred, labels)
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert out["per_class"]["other"]["recall"] == pytest.approx(0.5)
    assert out["per_class"]["1"]["f1"] == pytest.approx(1.0)
    assert out["macro"]["f1"] == pytest.approx(np.mean([0.5, 1.0, 0.5]))


@pytest.fixture(params=["ties", "continuous"])
def scores(request):
    """Known and unknown scores that overlap; rounded to a few values they also tie across the two sets."""
    rng = np.random.default_rng(7)
    known, unknown = rng.normal(1.0, 1.0, 400), rng.normal(-0.5, 1.2, 300)
    if request.param == "ties":
        known, unknown = np.round(known), np.round(unknown)
    return known, unknown


def test_detection_metrics_follow_scikit_learn(scores):
    skm = pytest.importorskip("sklearn.metrics")
    known, unknown = scores
    y = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    s = np.r_[known, unknown]
    assert metrics.auroc(known, unknown) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert metrics.aupr_in(known, unknown) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert metrics.aupr_out(known, unknown) == pytest.approx(skm.average_precision_score(1 - y, -s), abs=1e-12)
    fpr, tpr = metrics.roc_curve(known, unknown)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_classification_metrics_follow_scikit_learn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    y_pred[y_pred == 3] = 2  # one class never predicted: precision 0 by scikit-learn's zero_division=0
    out = metrics.classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    for i, label in enumerate("abcd"):
        assert out["per_class"][label] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    macro = skm.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert [out["macro"][k] for k in ("precision", "recall", "f1")] == pytest.approx(macro[:3])
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert out["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred).tolist()
