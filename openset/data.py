"""Datasets: torchvision's MNIST / Fashion-MNIST as in-memory tensors, and the open-set splits.

The data root comes from the caller, else ``OPENSET_DATA_DIR``, else ``~/.cache/openset/data``.
On a normal machine a missing dataset is downloaded by torchvision; offline (or with
``OPENSET_DOWNLOAD=0``) a missing dataset raises :class:`DataNotFoundError` with one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torchvision import datasets

from openset.config import DataConfig

DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
DEFAULT_ROOT = Path.home() / ".cache" / "openset" / "data"


class DataNotFoundError(RuntimeError):
    """The dataset is not under the data root and could not be downloaded."""


@dataclass(frozen=True)
class Split:
    """Images as float32 ``[N, 1, 28, 28]`` in [0, 1] (white on black) and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray | torch.Tensor) -> Split:
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class OpenSetData:
    """Known-class train/validation splits (labels 0..K-1) and the untouched test sets.

    ``test_known`` holds the known classes of the test set, ``test_unknown`` every other class
    (labels are the original ones there); ``train_unknown`` is only for the labelled
    ``supervised`` variant and is never used by the honest default.
    """

    classes: tuple[int, ...]
    train: Split
    val: Split
    test_known: Split
    test_unknown: Split
    train_unknown: Split


def data_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("OPENSET_DATA_DIR") or DEFAULT_ROOT).expanduser()


def load_dataset(
    name: str, train: bool, root: str | Path | None = None, download: bool | None = None
) -> Split:
    """One split of a torchvision dataset, fully in memory."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    root = data_root(root)
    if download is None:
        download = os.environ.get("OPENSET_DOWNLOAD", "1").lower() not in ("0", "false", "no")
    cls = DATASETS[name]
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise DataNotFoundError(
                f"{cls.__name__} not found under {root} (set OPENSET_DATA_DIR to a folder "
                f"holding {cls.__name__}/raw, or allow downloads)"
            ) from None
        try:
            ds = cls(str(root), train=train, download=True)
        except Exception as err:  # network errors come in many types
            raise DataNotFoundError(
                f"{cls.__name__} not found under {root} and the download failed "
                f"({type(err).__name__}); set OPENSET_DATA_DIR to a folder holding "
                f"{cls.__name__}/raw"
            ) from None
    images = ds.data.unsqueeze(1).float().div_(255.0)
    return Split(images, ds.targets.long())


def uniform_noise(n: int, seed: int) -> Split:
    """Uniform [0, 1] pixel noise, the simplest unknown."""
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=gen), torch.full((n,), -1))


def select_classes(split: Split, classes: tuple[int, ...], keep: bool) -> Split:
    mask = torch.isin(split.labels, torch.tensor(classes))
    return split.subset(torch.nonzero(mask if keep else ~mask).squeeze(1))


def remap_classes(split: Split, classes: tuple[int, ...]) -> Split:
    lookup = torch.full((10,), -1, dtype=torch.long)
    lookup[list(classes)] = torch.arange(len(classes))
    return Split(split.images, lookup[split.labels])


def open_set_data(cfg: DataConfig, seed: int, root: str | Path | None = None) -> OpenSetData:
    """The deterministic, stratified train/validation split of the known training images."""
    train_all = load_dataset(cfg.dataset, train=True, root=root)
    test_all = load_dataset(cfg.dataset, train=False, root=root)
    known = remap_classes(select_classes(train_all, cfg.known_classes, keep=True), cfg.known_classes)
    train_idx, val_idx = train_test_split(
        np.arange(len(known)),
        test_size=cfg.val_fraction,
        stratify=known.labels.numpy(),
        random_state=seed,
    )
    return OpenSetData(
        classes=cfg.known_classes,
        train=known.subset(np.sort(train_idx)),
        val=known.subset(np.sort(val_idx)),
        test_known=remap_classes(select_classes(test_all, cfg.known_classes, keep=True), cfg.known_classes),
        test_unknown=select_classes(test_all, cfg.known_classes, keep=False),
        train_unknown=select_classes(train_all, cfg.known_classes, keep=False),
    )
