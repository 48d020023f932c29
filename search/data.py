"""CIFAR-10 from the canonical ``cifar-10-batches-py`` folder, kept as uint8 in memory."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.config import Data
from search.errors import UsageError

ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ORIGIN_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"


@dataclass(frozen=True)
class Split:
    """Training and validation images (uint8, NHWC) and labels (uint8)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The folder holding the batches: ``data_dir`` if given, else Keras' download cache."""
    if data_dir:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise UsageError(f"DATA_DIR {folder}: no such folder")
    else:
        folder = _keras_cache()
    missing = [f for f in (META_FILE, *TRAIN_FILES, TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise UsageError(
            f"DATA_DIR {folder}: not a cifar-10-batches-py folder (missing {', '.join(missing)})"
        )
    return folder


def _keras_cache() -> Path:
    from keras.utils import get_file

    try:
        root = get_file(
            fname="cifar-10-batches-py-target", origin=ORIGIN, extract=True, file_hash=ORIGIN_SHA256
        )
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            "CIFAR-10 is not available: set DATA_DIR to a local cifar-10-batches-py folder, "
            f"or go online so Keras can download and cache it ({reason})"
        ) from None
    return Path(root) / "cifar-10-batches-py"


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as ``(images NHWC uint8, labels uint8)``."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.uint8)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as exc:
        raise UsageError(f"{path}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if len(images) != len(labels) or labels.size and labels.max() > 9:
        raise UsageError(f"{path}: not a CIFAR-10 batch (labels do not match the images)")
    return np.ascontiguousarray(images), labels


def _read(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    batches = [read_batch(folder / name) for name in names]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def load_train(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The training batches; the search reads nothing else."""
    return _read(folder, TRAIN_FILES)


def load_test(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test batch, read once by retraining."""
    return _read(folder, (TEST_FILE,))


def split(x: np.ndarray, y: np.ndarray, data: Data) -> Split:
    """A stratified train/validation split of the training images, fixed by ``data.split_seed``."""
    from sklearn.model_selection import train_test_split

    if data.train_size + data.val_size > len(x):
        raise UsageError(
            f"data: train_size + val_size = {data.train_size + data.val_size} exceeds "
            f"the {len(x)} training images available"
        )
    train_idx, val_idx = train_test_split(
        np.arange(len(x)),
        train_size=data.train_size,
        test_size=data.val_size,
        stratify=y,
        random_state=data.split_seed,
    )
    return Split(x[train_idx], y[train_idx], x[val_idx], y[val_idx])


def load_split(data_dir: str | Path | None, data: Data) -> Split:
    """Resolve the folder, read the training batches and carve the split: once per process."""
    return split(*load_train(resolve_data_dir(data_dir)), data)
