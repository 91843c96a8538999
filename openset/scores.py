"""Every open-set score behind one interface. Sign convention, everywhere: **higher = more known**.

In the style of pytorch-ood's ``Detector`` and scikit-learn's outlier estimators:

* ``fit_features(features, labels)`` / ``score_features(features)`` work on :class:`Features`
  extracted once by the model, so many scores share one forward pass;
* ``fit(x, labels)`` / ``score_samples(x)`` do the same on raw inputs through the optional
  ``extractor`` callable (inputs -> :class:`Features`).

``__init__`` stores parameters only; learned state ends in ``_``; scoring an unfitted
detector that needs fitting raises :class:`NotFittedError`. This module is numpy/scikit-learn
only: it does not import torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.cluster import KMeans
from sklearn.covariance import EmpiricalCovariance
from sklearn.exceptions import NotFittedError

from openset.config import ScoreConfig

__all__ = ["Features", "Detector", "NotFittedError", "SCORES", "build_detectors"]


@dataclass(frozen=True)
class Features:
    """What the model computes for a batch: ``logits [N, K]``, ``embedding [N, D]``, ``known_logit [N]``."""

    logits: np.ndarray
    embedding: np.ndarray
    known_logit: np.ndarray

    def __len__(self) -> int:
        return len(self.logits)


class Detector:
    """Base class. ``score_features`` returns one float per sample; higher = more known."""

    #: whether ``fit_features`` must run before scoring
    needs_fit = False

    def __init__(self, extractor: Callable[[Any], Features] | None = None) -> None:
        self.extractor = extractor

    def fit_features(self, features: Features, labels: np.ndarray) -> Detector:
        """Learn from known-class features and their labels 0..K-1. Returns ``self``."""
        return self

    def score_features(self, features: Features) -> np.ndarray:
        """Scores for a batch of features; higher = more known."""
        if self.needs_fit and not self._is_fitted():
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        return self._score(features)

    def fit(self, x: Any, labels: np.ndarray) -> Detector:
        """``fit_features`` on the extractor's features of raw inputs ``x``."""
        return self.fit_features(self._extract(x), labels)

    def score_samples(self, x: Any) -> np.ndarray:
        """``score_features`` on raw inputs ``x``; higher = more known."""
        return self.score_features(self._extract(x))

    def _extract(self, x: Any) -> Features:
        if isinstance(x, Features):
            return x
        if self.extractor is None:
            raise ValueError(f"{type(self).__name__} has no extractor; pass Features instead")
        return self.extractor(x)

    def _is_fitted(self) -> bool:
        return any(name.endswith("_") and not name.startswith("_") for name in vars(self))

    def _score(self, features: Features) -> np.ndarray:
        raise NotImplementedError


class MaxSoftmax(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel); higher = more known."""

    def _score(self, features: Features) -> np.ndarray:
        return softmax(features.logits, axis=1).max(axis=1)


class MaxLogit(Detector):
    """Largest logit (Hendrycks et al. 2022); higher = more known."""

    def _score(self, features: Features) -> np.ndarray:
        return features.logits.max(axis=1)


class Energy(Detector):
    """Negative free energy ``logsumexp(logits)`` (Liu et al. 2020); higher = more known."""

    def _score(self, features: Features) -> np.ndarray:
        return logsumexp(features.logits, axis=1)


class SigmoidHead(Detector):
    """The sigmoid known-class head's logit (monotone in its probability); higher = more known."""

    def _score(self, features: Features) -> np.ndarray:
        return features.known_logit


def _normalise(emb: np.ndarray) -> np.ndarray:
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


class ReferenceDistance(Detector):
    """Minus the distance to the ``rank``-th nearest of a set of reference embeddings; higher = more known.

    Subclasses choose the references (``references_``) and the rank; ``normalise`` compares
    L2-normalised vectors (cosine geometry). The ONNX graph computes the same (``openset.export``).
    """

    needs_fit = True
    rank = 1
    normalise = False

    def _prepare(self, embedding: np.ndarray) -> np.ndarray:
        return _normalise(embedding) if self.normalise else embedding

    def distances(self, features: Features, chunk: int = 1024) -> np.ndarray:
        """The ``rank``-th smallest distance to the references (lower = more known)."""
        if not self._is_fitted():
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        emb, refs = self._prepare(features.embedding), self.references_
        out = np.empty(len(emb))
        for start in range(0, len(emb), chunk):
            part = emb[start : start + chunk]
            squared = (part**2).sum(1)[:, None] - 2 * part @ refs.T + (refs**2).sum(1)[None, :]
            out[start : start + chunk] = np.partition(squared, self.rank - 1, axis=1)[:, self.rank - 1]
        return np.sqrt(np.maximum(out, 0.0))

    def _score(self, features: Features) -> np.ndarray:
        return -self.distances(features)


class CentroidDistance(ReferenceDistance):
    """Minus the distance to the nearest class centroid in embedding space; higher = more known.

    ``metric="cosine"`` measures the Euclidean distance between L2-normalised vectors.
    ``per_class > 1`` replaces each class mean by that many k-means prototypes of the class.
    """

    def __init__(self, metric: str = "euclidean", per_class: int = 1, seed: int = 0, extractor=None) -> None:
        super().__init__(extractor)
        self.metric = metric
        self.per_class = per_class
        self.seed = seed

    @property
    def normalise(self) -> bool:
        return self.metric == "cosine"

    def _centres(self, emb: np.ndarray) -> np.ndarray:
        if self.per_class == 1:
            return emb.mean(axis=0, keepdims=True)
        return KMeans(self.per_class, n_init=1, random_state=self.seed).fit(emb).cluster_centers_

    def fit_features(self, features: Features, labels: np.ndarray) -> CentroidDistance:
        emb = self._prepare(features.embedding)
        centroids = np.concatenate([self._centres(emb[labels == c]) for c in np.unique(labels)])
        self.references_ = self._prepare(centroids)
        return self

    @property
    def centroids_(self) -> np.ndarray:
        return self.references_

    @property
    def measures(self) -> str:
        """What :meth:`distances` measures, in words (the manifest describes the ``distance`` output with it)."""
        centres = "class centroid" if self.per_class == 1 else f"class prototype ({self.per_class} per class)"
        return f"{self.metric} distance of the embedding to the nearest {centres}"


class Mahalanobis(Detector):
    """Minus the smallest Mahalanobis distance to a class mean, shared covariance (Lee et al. 2018);
    higher = more known."""

    needs_fit = True

    def fit_features(self, features: Features, labels: np.ndarray) -> Mahalanobis:
        emb = features.embedding
        self.means_ = np.stack([emb[labels == c].mean(axis=0) for c in np.unique(labels)])
        centred = emb - self.means_[np.searchsorted(np.unique(labels), labels)]
        self.precision_ = EmpiricalCovariance(assume_centered=True).fit(centred).precision_
        return self

    def _score(self, features: Features) -> np.ndarray:
        diff = features.embedding[:, None, :] - self.means_[None, :, :]
        dist = np.einsum("nkd,de,nke->nk", diff, self.precision_, diff)
        return -dist.min(axis=1)


class KNN(ReferenceDistance):
    """Minus the distance to the k-th nearest known training embedding, L2-normalised
    (Sun et al. 2022), among at most ``bank`` of them; higher = more known."""

    normalise = True

    def __init__(self, k: int = 10, bank: int = 8192, seed: int = 0, extractor=None) -> None:
        super().__init__(extractor)
        self.k, self.bank, self.seed = k, bank, seed

    @property
    def rank(self) -> int:
        return self.k

    @property
    def measures(self) -> str:
        """What :meth:`distances` measures, in words (the manifest describes the ``distance`` output with it)."""
        return f"distance of the L2-normalised embedding to its {self.k}-th nearest known training embedding"

    def fit_features(self, features: Features, labels: np.ndarray) -> KNN:
        bank = _normalise(features.embedding)
        if len(bank) > self.bank:
            keep = np.random.default_rng(self.seed).choice(len(bank), self.bank, replace=False)
            bank = bank[np.sort(keep)]
        self.references_ = bank
        return self


class Combined(Detector):
    """The shipped score: a weighted sum of the sigmoid head's logit and minus a reference distance
    (the config's: the kNN distance or the nearest class centroid), each standardised by its mean and standard deviation
    on the fit data (known classes only); higher = more known.

    ``score = w * (known_logit - loc_[0]) / scale_[0] + (1 - w) * (-distance - loc_[1]) / scale_[1]``
    — affine in the two terms, so the ONNX graph computes it exactly (see ``openset.export``).
    """

    needs_fit = True

    def __init__(self, head_weight: float, distance: ReferenceDistance, extractor=None) -> None:
        super().__init__(extractor)
        self.head_weight = head_weight
        self.distance = distance

    def _components(self, features: Features) -> np.ndarray:
        return np.stack([features.known_logit, -self.distance_.distances(features)], axis=1)

    def fit_features(self, features: Features, labels: np.ndarray) -> Combined:
        self.distance_ = copy.deepcopy(self.distance).fit_features(features, labels)
        parts = self._components(features)
        self.loc_ = parts.mean(axis=0)
        self.scale_ = np.maximum(parts.std(axis=0), 1e-12)
        return self

    @property
    def weights(self) -> np.ndarray:
        return np.array([self.head_weight, 1.0 - self.head_weight])

    def standardised_components(self, features: Features) -> np.ndarray:
        """``[N, 2]``: the head logit and minus the distance, standardised; the score is these @ ``weights``
        (so every head weight can be scored from one computation of the distances)."""
        if not self._is_fitted():
            raise NotFittedError("Combined is not fitted; call fit() first")
        return (self._components(features) - self.loc_) / self.scale_

    def _score(self, features: Features) -> np.ndarray:
        return self.standardised_components(features) @ self.weights


def combined_distance(cfg: ScoreConfig, seed: int) -> ReferenceDistance:
    """The distance term of the combined score, as the config names it."""
    if cfg.combined_distance == "knn":
        return KNN(cfg.knn_k, cfg.knn_bank, seed)
    return CentroidDistance(cfg.centroid_metric, cfg.combined_per_class, seed)


# Each score from the config's settings and the run's seed (the kNN bank's sample, the k-means start).
SCORES: dict[str, Callable[[ScoreConfig, int], Detector]] = {
    "msp": lambda cfg, seed: MaxSoftmax(),
    "max_logit": lambda cfg, seed: MaxLogit(),
    "energy": lambda cfg, seed: Energy(),
    "known_head": lambda cfg, seed: SigmoidHead(),
    "centroid": lambda cfg, seed: CentroidDistance(cfg.centroid_metric, seed=seed),
    "prototypes": lambda cfg, seed: CentroidDistance(cfg.centroid_metric, cfg.prototypes_per_class, seed),
    "mahalanobis": lambda cfg, seed: Mahalanobis(),
    "knn": lambda cfg, seed: KNN(cfg.knn_k, cfg.knn_bank, seed),
    "combined": lambda cfg, seed: Combined(cfg.combined_head_weight, combined_distance(cfg, seed)),
}


def build_detectors(cfg: ScoreConfig, seed: int, names: list[str] | None = None) -> dict[str, Detector]:
    """Fresh, unfitted detectors by name (all of :data:`SCORES` by default); ``seed`` is the run's
    (``Config.seed``)."""
    return {name: SCORES[name](cfg, seed) for name in (names or SCORES)}


def fit_scores(cfg: ScoreConfig, seed: int, features: Features, labels: np.ndarray,
               names: list[str] | None = None) -> dict[str, Detector]:
    """:func:`build_detectors`, each fitted on the known training digits' features."""
    return {name: det.fit_features(features, labels) for name, det in build_detectors(cfg, seed, names).items()}
