import numpy as np
import pytest

from openset.config import ScoreConfig
from openset.scores import (
    KNN,
    SCORES,
    CentroidDistance,
    Combined,
    Features,
    NotFittedError,
    build_detectors,
    fit_scores,
)

from .conftest import far_features, make_features

ALL = sorted(SCORES)


@pytest.fixture
def fitted():
    feats, labels = make_features()
    return fit_scores(ScoreConfig(knn_k=3), 0, feats, labels)


@pytest.mark.parametrize("name", ALL)
def test_sign_convention_known_scores_higher_than_unknown(fitted, name):
    known, _ = make_features(seed=5)
    known_scores = fitted[name].score_features(known)
    unknown_scores = fitted[name].score_features(far_features())
    assert known_scores.shape == (len(known),)
    assert np.median(known_scores) > np.max(unknown_scores)


@pytest.mark.parametrize("name", [n for n in ALL if SCORES[n](ScoreConfig(), 0).needs_fit])
def test_unfitted_detector_raises(name):
    feats, _ = make_features()
    with pytest.raises(NotFittedError, match="not fitted"):
        SCORES[name](ScoreConfig(), 0).score_features(feats)


@pytest.mark.parametrize("name", ALL)
def test_init_stores_parameters_only(name):
    det = SCORES[name](ScoreConfig(), 0)
    assert not [k for k in vars(det) if k.endswith("_")]


@pytest.mark.parametrize("name", ALL)
def test_fit_and_score_samples_go_through_the_extractor(name):
    feats, labels = make_features()
    table = {"a": feats}
    det = SCORES[name](ScoreConfig(knn_k=3), 0)
    det.extractor = table.__getitem__
    det.fit("a", labels)
    direct = SCORES[name](ScoreConfig(knn_k=3), 0).fit_features(feats, labels)
    np.testing.assert_allclose(det.score_samples("a"), direct.score_features(feats))


def test_score_samples_without_extractor_is_a_clear_error():
    with pytest.raises(ValueError, match="no extractor"):
        SCORES["msp"](ScoreConfig(), 0).score_samples(np.zeros((2, 3)))


def test_centroid_distance_is_distance_to_nearest_class_mean():
    feats, labels = make_features()
    det = SCORES["centroid"](ScoreConfig(centroid_metric="euclidean"), 0).fit_features(feats, labels)
    means = np.stack([feats.embedding[labels == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(det.centroids_, means)
    probe = Features(np.zeros((1, 3)), means[1:2] + np.array([[0, 0, 0, 2.0]]), np.zeros(1))
    np.testing.assert_allclose(det.score_features(probe), [-2.0])


def test_combined_is_the_documented_affine_formula():
    feats, labels = make_features()
    det = Combined(0.3, CentroidDistance()).fit_features(feats, labels)
    probe = far_features()
    head = (probe.known_logit - det.loc_[0]) / det.scale_[0]
    cent = (-det.distance_.distances(probe) - det.loc_[1]) / det.scale_[1]
    np.testing.assert_allclose(det.score_features(probe), 0.3 * head + 0.7 * cent)
    # Standardised on the fit data: mean zero there.
    assert det.score_features(feats).mean() == pytest.approx(0.0, abs=1e-9)


def test_cosine_centroids_ignore_embedding_scale():
    feats, labels = make_features()
    det = SCORES["centroid"](ScoreConfig(centroid_metric="cosine"), 0).fit_features(feats, labels)
    scaled = Features(feats.logits, feats.embedding * 10, feats.known_logit)
    np.testing.assert_allclose(det.score_features(scaled), det.score_features(feats))


def test_knn_distance_is_the_kth_nearest_normalised_training_embedding():
    feats, labels = make_features()
    det = SCORES["knn"](ScoreConfig(knn_k=4), 0).fit_features(feats, labels)
    probe = far_features()
    bank = feats.embedding / np.linalg.norm(feats.embedding, axis=1, keepdims=True)
    query = probe.embedding / np.linalg.norm(probe.embedding, axis=1, keepdims=True)
    brute = np.sort(np.linalg.norm(query[:, None] - bank[None], axis=2), axis=1)[:, 3]
    np.testing.assert_allclose(det.score_features(probe), -brute, atol=1e-9)


def test_knn_bank_is_bounded_and_seeded():
    feats, labels = make_features(n_per_class=100)
    det = SCORES["knn"](ScoreConfig(knn_bank=50), 0).fit_features(feats, labels)
    again = SCORES["knn"](ScoreConfig(knn_bank=50), 0).fit_features(feats, labels)
    assert det.references_.shape == (50, feats.embedding.shape[1])
    np.testing.assert_array_equal(det.references_, again.references_)


def test_combined_can_use_the_knn_distance():
    feats, labels = make_features()
    det = build_detectors(ScoreConfig(combined_distance="knn", knn_k=3), 0, ["combined"])["combined"]
    det.fit_features(feats, labels)
    assert type(det.distance_).__name__ == "KNN"
    assert np.median(det.score_features(feats)) > np.max(det.score_features(far_features()))


def test_the_run_seed_reaches_every_random_choice_of_the_scores():
    feats, labels = make_features()
    cfg = ScoreConfig(knn_k=3, knn_bank=20, prototypes_per_class=3, combined_distance="knn")
    runs = {seed: fit_scores(cfg, seed, feats, labels, ["knn", "prototypes", "combined"]) for seed in (0, 0, 1)}
    again, other = fit_scores(cfg, 0, feats, labels), runs[1]
    for name, bank in (("knn", lambda d: d.references_), ("combined", lambda d: d.distance_.references_)):
        np.testing.assert_array_equal(bank(runs[0][name]), bank(again[name]))
        assert not np.array_equal(bank(runs[0][name]), bank(other[name]))
    assert not np.allclose(np.sort(runs[0]["prototypes"].centroids_, 0), np.sort(other["prototypes"].centroids_, 0))


def test_the_combined_score_takes_its_weight_and_distance_from_the_config_only():
    det = build_detectors(ScoreConfig(), 0, ["combined"])["combined"]
    assert det.head_weight == ScoreConfig().combined_head_weight and isinstance(det.distance, KNN)
    with pytest.raises(TypeError):
        Combined()  # no default of its own to disagree with the config's
