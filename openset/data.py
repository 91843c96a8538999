"""Datasets: MNIST, Fashion-MNIST and KMNIST as in-memory numpy arrays, and the open-set splits.

The files are torchvision's layout (``<root>/MNIST/raw/t10k-images-idx3-ubyte`` ...) and are read
with numpy alone, so evaluation runs on a serving install (no torch). torchvision is imported only
to download a missing dataset, when downloads are allowed (``OPENSET_DOWNLOAD``, default yes).

The data root: the caller's, else ``$OPENSET_DATA_DIR``, else ``../shared/data`` beside the
repository when it holds MNIST, else the download cache ``~/.cache/openset/data``. One line on
stderr says which root a process reads from.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openset.config import DataConfig

# Dataset name -> torchvision's folder (and class) name. KMNIST is an unknown set for evaluation only.
DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
BESIDE_REPOSITORY = Path(__file__).resolve().parents[2] / "shared" / "data"
DOWNLOAD_CACHE = Path.home() / ".cache" / "openset" / "data"
DATA_DIR_HELP = ("data root (default: $OPENSET_DATA_DIR, else ../shared/data beside the repository, "
                 "else the download cache)")


class DataNotFoundError(RuntimeError):
    """The dataset is not under the data root and could not be downloaded."""


@dataclass(frozen=True)
class Split:
    """Images as float32 ``[N, 1, side, side]`` (MNIST: 28) in [0, 1] (white on black) and int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
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
    """Where the datasets are read (and downloaded to)."""
    return _resolve_root(root)[0]


def _resolve_root(root: str | Path | None) -> tuple[Path, str]:
    if root:
        path, source = Path(root), "--data-dir"
    elif os.environ.get("OPENSET_DATA_DIR"):
        path, source = Path(os.environ["OPENSET_DATA_DIR"]), "OPENSET_DATA_DIR"
    elif (BESIDE_REPOSITORY / "MNIST" / "raw").is_dir():
        path, source = BESIDE_REPOSITORY, "../shared/data beside the repository"
    else:
        path, source = DOWNLOAD_CACHE, "the download cache"
    return path.expanduser(), source


@functools.cache
def _announce(path: str, source: str) -> None:
    print(f"data: {path} ({source})", file=sys.stderr, flush=True)


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (LeCun's MNIST format) as a numpy array."""
    raw = path.read_bytes()
    if raw[:3] != b"\0\0\x08":
        raise DataNotFoundError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = np.frombuffer(raw, ">u4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _raw_files(root: Path, name: str, train: bool) -> tuple[Path, Path]:
    prefix = "train" if train else "t10k"
    folder = root / DATASETS[name] / "raw"
    return folder / f"{prefix}-images-idx3-ubyte", folder / f"{prefix}-labels-idx1-ubyte"


def _download(root: Path, name: str, train: bool) -> None:
    folder = DATASETS[name]
    try:
        from torchvision import datasets  # the training install has it; serving never downloads

        getattr(datasets, folder)(str(root), train=train, download=True)
    except Exception as err:  # no torchvision, or network errors in many types
        raise DataNotFoundError(
            f"{folder} not found under {root} and the download failed ({type(err).__name__}); "
            f"set OPENSET_DATA_DIR to a folder holding {folder}/raw"
        ) from None


def load_dataset(name: str, train: bool, root: str | Path | None = None, download: bool | None = None) -> Split:
    """One split of a dataset, fully in memory."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    root, source = _resolve_root(root)
    images_file, labels_file = _raw_files(root, name, train)
    if not (images_file.is_file() and labels_file.is_file()):
        if download is None:
            download = os.environ.get("OPENSET_DOWNLOAD", "1").lower() not in ("0", "false", "no")
        if not download:
            raise DataNotFoundError(
                f"{DATASETS[name]} not found under {root} (set OPENSET_DATA_DIR to a folder holding "
                f"{DATASETS[name]}/raw, or allow downloads)"
            )
        _download(root, name, train)
    _announce(str(root), source)
    images = read_idx(images_file).astype(np.float32)[:, None] / 255.0
    return Split(images, read_idx(labels_file).astype(np.int64))


def uniform_noise(n: int, seed: int, side: int = 28) -> Split:
    """Uniform [0, 1] pixel noise, the simplest unknown."""
    images = np.random.default_rng(seed).random((n, 1, side, side), dtype=np.float32)
    return Split(images, np.full(n, -1, dtype=np.int64))


def select_classes(split: Split, classes: tuple[int, ...], keep: bool) -> Split:
    mask = np.isin(split.labels, classes)
    return split.subset(np.nonzero(mask if keep else ~mask)[0])


def remap_classes(split: Split, classes: tuple[int, ...]) -> Split:
    lookup = np.full(10, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    return Split(split.images, lookup[split.labels])


def test_sets(cfg: DataConfig, root: str | Path | None = None) -> tuple[Split, Split]:
    """The test split's known classes (labels 0..K-1) and every other class (original labels)."""
    test_all = load_dataset(cfg.dataset, train=False, root=root)
    known = remap_classes(select_classes(test_all, cfg.known_classes, keep=True), cfg.known_classes)
    return known, select_classes(test_all, cfg.known_classes, keep=False)


def open_set_data(cfg: DataConfig, seed: int, root: str | Path | None = None) -> OpenSetData:
    """The deterministic, stratified train/validation split of the known training images."""
    from sklearn.model_selection import train_test_split  # training only

    train_all = load_dataset(cfg.dataset, train=True, root=root)
    known = remap_classes(select_classes(train_all, cfg.known_classes, keep=True), cfg.known_classes)
    train_idx, val_idx = train_test_split(
        np.arange(len(known)), test_size=cfg.val_fraction, stratify=known.labels, random_state=seed
    )
    test_known, test_unknown = test_sets(cfg, root)
    return OpenSetData(
        classes=cfg.known_classes,
        train=known.subset(np.sort(train_idx)),
        val=known.subset(np.sort(val_idx)),
        test_known=test_known,
        test_unknown=test_unknown,
        train_unknown=select_classes(train_all, cfg.known_classes, keep=False),
    )
