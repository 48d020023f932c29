"""CIFAR-10 from the canonical ``cifar-10-batches-py`` folder, kept as uint8 in memory."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from search.base.config import Data
from search.base.errors import UsageError
from search.base.files import check_path

ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ORIGIN_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"


@dataclass(frozen=True)
class Split:
    """Training and validation images (uint8, NHWC) and labels (uint8), with the ``fingerprint``
    of the training images they were carved from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    fingerprint: dict[str, Any]


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The folder holding the batches: ``data_dir`` if given, else Keras' download cache."""
    if data_dir:
        folder = check_path("DATA_DIR", str(data_dir))
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
    from search.learning.quiet import import_tensorflow

    import_tensorflow()  # Keras loads it
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


def _latin1(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and for nothing else."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode to {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array reconstructor, wherever it lives
IMAGES_PER_BATCH = 10_000  # CIFAR-10's: five training batches and one test batch of 10,000
PIXELS = 3 * 32 * 32
MAX_ARRAY_BYTES = IMAGES_PER_BATCH * PIXELS  # the largest array a batch holds: its uint8 pixels
MAX_FILE_BYTES = 2 * MAX_ARRAY_BYTES  # a canonical batch is 31 MB: its pixels and a little more


def _declared(shape: Any, dtype: Any) -> None:
    """Refuse an array a batch declares before numpy allocates it: numbers only (no Python
    objects), and no more bytes than a CIFAR-10 batch's pixels."""
    shape = (shape,) if isinstance(shape, int) else shape
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"an array of shape {shape!r}")
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":  # what is no integer is refused after, by name (_integers)
        raise pickle.UnpicklingError(f"an array of {dtype} (numbers only)")
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(
            f"an array of {size:,} bytes declared, more than a CIFAR-10 batch's {MAX_ARRAY_BYTES:,}"
        )


class _Array(np.ndarray):
    """``numpy.ndarray`` as a batch may build it: through ``_reconstruct`` and a state whose
    shape, type and bytes are checked first (numpy allocates, or crashes, on others)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise pickle.UnpicklingError("refused a direct numpy.ndarray call")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array state that numpy does not write")
        shape, dtype, _, data = state[-4:]
        _declared(shape, dtype)
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * np.dtype(dtype).itemsize:
            raise pickle.UnpicklingError("an array whose bytes do not match its shape")
        super().__setstate__(state)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _Array:
        raise pickle.UnpicklingError("refused an array of another type")
    _declared(shape, dtype)
    return _RECONSTRUCT(_Array, shape, dtype)


_GLOBALS = {  # all that canonical batches (numpy 1) and their numpy 2 re-pickles refer to
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class _BatchUnpickler(pickle.Unpickler):
    """Builds dicts, lists, bytes, str, numbers and numpy arrays; refuses any other global,
    so a crafted batch cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {f'{module}.{name}'!r}") from None


def _bad(path: Path, reason: str) -> UsageError:
    return UsageError(f"{path}: not a CIFAR-10 batch ({reason})")


def _integers(path: Path, what: str, value: Any, high: int) -> np.ndarray:
    """``value`` as uint8 if it holds integers in 0..``high``: no casting, no clipping."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged lists
        array = np.empty(1, dtype=object)
    if array.size == 0:
        raise _bad(path, f"no {what}")
    if array.dtype.kind not in "iu":
        raise _bad(path, f"{what} are {array.dtype}, not integers")
    if array.min() < 0 or array.max() > high:
        raise _bad(path, f"{what} range over {array.min()}..{array.max()}, not 0..{high}")
    return array.astype(np.uint8, copy=False)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as ``(images NHWC uint8, labels uint8)``, loaded without running code."""
    try:
        with open(path, "rb") as f:
            if (size := os.fstat(f.fileno()).st_size) > MAX_FILE_BYTES:
                raise _bad(path, f"{size:,} bytes, more than a CIFAR-10 batch's {MAX_FILE_BYTES:,} at most")
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except UsageError:
        raise
    except Exception as exc:
        raise _bad(path, ": ".join([type(exc).__name__, *str(exc).splitlines()[:1]])) from None
    if not isinstance(batch, dict) or not {b"data", b"labels"} <= batch.keys():
        raise _bad(path, "no data and labels")
    data = _integers(path, "pixels", batch[b"data"], 255)
    labels = _integers(path, "labels", batch[b"labels"], 9)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise _bad(path, f"data {data.shape} and labels {labels.shape}, not (n, 3072) and (n,)")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
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


def fingerprint(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What a study records of its training data: counts and a SHA-256 of images and labels."""
    digest = hashlib.sha256(np.ascontiguousarray(x))
    digest.update(np.ascontiguousarray(y))
    per_class = np.bincount(y, minlength=10).tolist()
    return {"images": len(x), "per_class": per_class, "sha256": digest.hexdigest()}


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
    return Split(x[train_idx], y[train_idx], x[val_idx], y[val_idx], fingerprint(x, y))


def load_split(data_dir: str | Path | None, data: Data) -> Split:
    """Resolve the folder, read the training batches and carve the split: once per process."""
    return split(*load_train(resolve_data_dir(data_dir)), data)


def describe_data(fingerprint: Any) -> str:
    """A data fingerprint (``fingerprint``) for a message: ``50,000 images
    sha256 1a2b3c4d5e6f...``; JSON for anything else read back from storage."""
    match fingerprint:
        case {"images": int(count), "sha256": str(sha)} if sha.isalnum():
            return f"{count:,} images sha256 {sha[:12]}..."
    return json.dumps(fingerprint)


def other_data(stored: Any, found: Any) -> str:
    """``searched on other data (stored ..., DATA_DIR has ...)``: one wording for every command."""
    return f"searched on other data (stored {describe_data(stored)}, DATA_DIR has {describe_data(found)})"
