import numpy as np
import pytest

from openset.config import ScoreConfig
from openset.scores import SCORES, Combined, Features, NotFittedError, build_detectors

from .conftest import far_features, make_features

ALL = sorted(SCORES)


@pytest.fixture
def fitted():
    feats, labels = make_features()
    return {name: det.fit_features(feats, labels) for name, det in build_detectors(ScoreConfig(knn_k=3)).items()}


@pytest.mark.parametrize("name", ALL)
def test_sign_convention_known_scores_higher_than_unknown(fitted, name):
    known, _ = make_features(seed=5)
    known_scores = fitted[name].score_features(known)
    unknown_scores = fitted[name].score_features(far_features())
    assert known_scores.shape == (len(known),)
    assert np.median(known_scores) > np.max(unknown_scores)


@pytest.mark.parametrize("name", [n for n in ALL if SCORES[n](ScoreConfig()).needs_fit])
def test_unfitted_detector_raises(name):
    feats, _ = make_features()
    with pytest.raises(NotFittedError, match="not fitted"):
        SCORES[name](ScoreConfig()).score_features(feats)


@pytest.mark.parametrize("name", ALL)
def test_init_stores_parameters_only(name):
    det = SCORES[name](ScoreConfig())
    assert not [k for k in vars(det) if k.endswith("_")]


@pytest.mark.parametrize("name", ALL)
def test_fit_and_score_samples_go_through_the_extractor(name):
    feats, labels = make_features()
    table = {"a": feats}
    det = SCORES[name](ScoreConfig(knn_k=3))
    det.extractor = table.__getitem__
    det.fit("a", labels)
    direct = SCORES[name](ScoreConfig(knn_k=3)).fit_features(feats, labels)
    np.testing.assert_allclose(det.score_samples("a"), direct.score_features(feats))


def test_score_samples_without_extractor_is_a_clear_error():
    with pytest.raises(ValueError, match="no extractor"):
        SCORES["msp"](ScoreConfig()).score_samples(np.zeros((2, 3)))


def test_centroid_distance_is_distance_to_nearest_class_mean():
    feats, labels = make_features()
    det = SCORES["centroid"](ScoreConfig(centroid_metric="euclidean")).fit_features(feats, labels)
    means = np.stack([feats.embedding[labels == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(det.centroids_, means)
    probe = Features(np.zeros((1, 3)), means[1:2] + np.array([[0, 0, 0, 2.0]]), np.zeros(1))
    np.testing.assert_allclose(det.score_features(probe), [-2.0])


def test_combined_is_the_documented_affine_formula():
    feats, labels = make_features()
    det = Combined(head_weight=0.3).fit_features(feats, labels)
    probe = far_features()
    head = (probe.known_logit - det.loc_[0]) / det.scale_[0]
    cent = (-det.distance_.distances(probe) - det.loc_[1]) / det.scale_[1]
    np.testing.assert_allclose(det.score_features(probe), 0.3 * head + 0.7 * cent)
    # Standardised on the fit data: mean zero there.
    assert det.score_features(feats).mean() == pytest.approx(0.0, abs=1e-9)


def test_cosine_centroids_ignore_embedding_scale():
    feats, labels = make_features()
    det = SCORES["centroid"](ScoreConfig(centroid_metric="cosine")).fit_features(feats, labels)
    scaled = Features(feats.logits, feats.embedding * 10, feats.known_logit)
    np.testing.assert_allclose(det.score_features(scaled), det.score_features(feats))


def test_knn_distance_is_the_kth_nearest_normalised_training_embedding():
    feats, labels = make_features()
    det = SCORES["knn"](ScoreConfig(knn_k=4)).fit_features(feats, labels)
    probe = far_features()
    bank = feats.embedding / np.linalg.norm(feats.embedding, axis=1, keepdims=True)
    query = probe.embedding / np.linalg.norm(probe.embedding, axis=1, keepdims=True)
    brute = np.sort(np.linalg.norm(query[:, None] - bank[None], axis=2), axis=1)[:, 3]
    np.testing.assert_allclose(det.score_features(probe), -brute, atol=1e-9)


def test_knn_bank_is_bounded_and_seeded():
    feats, labels = make_features(n_per_class=100)
    det = SCORES["knn"](ScoreConfig(knn_bank=50)).fit_features(feats, labels)
    again = SCORES["knn"](ScoreConfig(knn_bank=50)).fit_features(feats, labels)
    assert det.references_.shape == (50, feats.embedding.shape[1])
    np.testing.assert_array_equal(det.references_, again.references_)


def test_combined_can_use_the_knn_distance():
    feats, labels = make_features()
    det = build_detectors(ScoreConfig(combined_distance="knn", knn_k=3), ["combined"])["combined"]
    det.fit_features(feats, labels)
    assert type(det.distance_).__name__ == "KNN"
    assert np.median(det.score_features(feats)) > np.max(det.score_features(far_features()))
