import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from search.base.config import Data
from search.base.errors import UsageError
from search.learning import data
from search.learning.data import describe_data
from search.testing import REPO, synthetic_images, write_batch

# A real cifar-10-batches-py folder, for the one test that reads the real files (skipped without).
REAL = Path(os.environ.get("SEARCH_TEST_CIFAR10") or "SEARCH_TEST_CIFAR10 unset")


def test_reads_the_canonical_format(cifar_dir):
    x, y = data.load_train(cifar_dir)
    assert x.shape == (500, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (500,) and set(np.unique(y)) == set(range(10))
    # Planes are R, G, B rows: the conftest writer transposes NHWC -> NCHW, so this round-trips.
    with open(cifar_dir / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert np.array_equal(x[0, :, :, 0].ravel(), raw[0, :1024])
    xt, _ = data.load_test(cifar_dir)
    assert len(xt) == 100


def test_split_is_stratified_disjoint_and_fixed_by_seed(cifar_dir):
    config = Data(train_size=300, val_size=100, split_seed=3)
    a, b = data.load_split(cifar_dir, config), data.load_split(cifar_dir, config)
    assert len(a.x_train) == 300 and len(a.x_val) == 100
    assert np.array_equal(a.x_val, b.x_val)
    assert np.bincount(a.y_val, minlength=10).tolist() == [10] * 10
    train_rows = {row.tobytes() for row in a.x_train}
    assert not any(row.tobytes() in train_rows for row in a.x_val)
    c = data.load_split(cifar_dir, Data(train_size=300, val_size=100, split_seed=4))
    assert not np.array_equal(a.x_val, c.x_val)


def test_split_larger_than_the_data_is_refused(cifar_dir):
    with pytest.raises(UsageError, match="exceeds the 500 training images"):
        data.load_split(cifar_dir, Data(train_size=450, val_size=100))


def test_missing_folder_and_files(tmp_path, cifar_dir):
    with pytest.raises(UsageError, match="no such folder"):
        data.resolve_data_dir(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "batches.meta").write_bytes((cifar_dir / "batches.meta").read_bytes())
    with pytest.raises(UsageError, match="missing data_batch_1, .*test_batch"):
        data.resolve_data_dir(partial)


def test_corrupt_batch_is_named(tmp_path, cifar_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in cifar_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="data_batch_3: not a CIFAR-10 batch"):
        data.load_train(data.resolve_data_dir(broken))


class Payload:
    """Unpickled by plain ``pickle``, this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_crafted_batch_runs_no_code(tmp_path, cifar_dir):
    crafted = tmp_path / "crafted"
    shutil.copytree(cifar_dir, crafted)
    marker = tmp_path / "marker"
    blob = pickle.dumps({b"data": Payload(marker), b"labels": [1]}, protocol=2)
    (crafted / "data_batch_2").write_bytes(blob)
    with pytest.raises(UsageError, match=r"data_batch_2: .*refused to load '__builtin__.exec'"):
        data.load_train(crafted)
    assert not marker.exists()
    pickle.loads(blob)  # the payload is live: plain pickle would have run it
    assert marker.exists()


def raw_batch(path: Path, pixels: object, labels: object) -> Path:
    batch = {b"batch_label": b"crafted", b"data": pixels, b"labels": labels}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


PIXELS = synthetic_images(4, seed=5)[0].transpose(0, 3, 1, 2).reshape(4, -1)


@pytest.mark.parametrize(
    "pixels, labels, message",
    [
        (PIXELS.astype(np.float32), [1, 2, 3, 4], "pixels are float32, not integers"),
        (PIXELS.astype(np.int16) - 1, [1, 2, 3, 4], "pixels range over -1..254"),
        (PIXELS.astype(np.int16) + 1, [1, 2, 3, 4], "pixels range over 1..256"),
        (PIXELS, [1, 2, 3.7, 4], "labels are float64, not integers"),
        (PIXELS, [1, 2, 10, 4], "labels range over 1..10"),
        (PIXELS, [1, -1, 3, 4], "labels range over -1..4"),
        (PIXELS, [True, False, True, False], "labels are bool, not integers"),
        (PIXELS, [1, 2, 3], r"data \(4, 3072\) and labels \(3,\)"),
        (PIXELS[:, :3000], [1, 2, 3, 4], r"data \(4, 3000\)"),
        ([], [], "no pixels"),
    ],
)
def test_values_are_checked_not_cast(tmp_path, pixels, labels, message):
    path = raw_batch(tmp_path / "data_batch_1", pixels, labels)
    with pytest.raises(UsageError, match=f"data_batch_1: not a CIFAR-10 batch \\({message}"):
        data.read_batch(path)


def test_the_checks_accept_the_edges(tmp_path):
    pixels = np.zeros((2, 3072), np.int64)
    pixels[1] = 255
    x, y = data.read_batch(raw_batch(tmp_path / "b", pixels, [0, 9]))
    assert x.dtype == y.dtype == np.uint8
    assert x[1].min() == 255 and y.tolist() == [0, 9]


@pytest.mark.skipif(not (REAL / "test_batch").is_file(), reason="no real CIFAR-10: set SEARCH_TEST_CIFAR10 to its folder")
def test_reads_the_real_test_batch():
    x, y = data.read_batch(REAL / "test_batch")
    assert x.shape == (10_000, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10


def test_the_fingerprint_follows_the_content_not_the_folder(tmp_path, cifar_dir):
    config = Data(train_size=300, val_size=100)
    first = data.load_split(cifar_dir, config).fingerprint
    assert first["images"] == 500 and first["per_class"] == [50] * 10
    copy = tmp_path / "copy"
    shutil.copytree(cifar_dir, copy)
    assert data.load_split(copy, config).fingerprint == first
    x, y = data.read_batch(copy / "data_batch_4")
    x[7, 3, 3, 1] ^= 1
    write_batch(copy / "data_batch_4", x, y)
    changed = data.load_split(copy, config).fingerprint
    assert changed["sha256"] != first["sha256"]
    assert describe_data(changed) == f"500 images sha256 {changed['sha256'][:12]}..."


RESOLVE = """
import sys
from pathlib import Path

from search.base.errors import UsageError
from search.learning import data

data.ORIGIN, data.ORIGIN_SHA256, archive = sys.argv[1:]
try:
    print(f"folder: {data.resolve_data_dir(None)}")
    Path(archive).unlink(missing_ok=True)  # a second call is served from the cache, with no download
    print(f"folder: {data.resolve_data_dir(None)}")
except UsageError as exc:
    print(f"error: {exc}")
"""


def resolve_without_data_dir(home: Path, archive: Path, sha256: str) -> list[str]:
    """``resolve_data_dir(None)`` twice in a fresh process whose Keras cache is ``home``
    (``KERAS_HOME``, read when Keras is imported), downloading from ``archive``."""
    env = {**os.environ, "KERAS_HOME": str(home), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", RESOLVE, archive.as_uri(), sha256, str(archive)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith(("folder: ", "error: "))]


def test_without_data_dir_keras_downloads_and_caches(tmp_path, cifar_dir):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_dir, arcname="cifar-10-batches-py")
    home = tmp_path / "keras-home"
    first, second = resolve_without_data_dir(home, archive, hashlib.sha256(archive.read_bytes()).hexdigest())
    folder = Path(first.removeprefix("folder: "))
    assert first == second and folder.is_relative_to(home)
    assert len(data.load_train(folder)[0]) == 500


def test_offline_without_data_dir_names_both_ways(tmp_path):
    (line,) = resolve_without_data_dir(tmp_path / "keras-home", tmp_path / "unreachable.tar.gz", "0" * 64)
    assert line.startswith("error: ") and "set DATA_DIR" in line and "download" in line


class _Pickled:
    """An object that pickles as ``reduce`` says: how a crafted batch declares its arrays."""

    def __init__(self, *reduce: object) -> None:
        self.reduce = reduce

    def __reduce__(self) -> tuple:
        return self.reduce


_RECONSTRUCT = np.empty(0).__reduce__()[0]
HUGE = (100_000, 3072)  # ten batches of pixels: 307 MB, declared in a few hundred bytes


@pytest.mark.parametrize(
    "array, message",
    [
        (_Pickled(np.ndarray, (HUGE, np.dtype("u1"))), "refused a direct numpy.ndarray call"),
        (_Pickled(_RECONSTRUCT, (np.ndarray, HUGE, np.dtype("u1"))),
         "an array of 307,200,000 bytes declared, more than a CIFAR-10 batch's 30,720,000"),
        (_Pickled(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, HUGE, np.dtype("u1"), False, b"\x00")),
         "an array of 307,200,000 bytes declared"),
        (_Pickled(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (4, 3072), np.dtype("u1"), False, b"\x00")),
         "an array whose bytes do not match its shape"),
        # numpy 2.x crashes (segfault) on an object array whose list is shorter than its shape
        (_Pickled(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, HUGE, np.dtype("O"), False, [1, 2])),
         "an array of object (numbers only)"),
        (_Pickled(_RECONSTRUCT, (np.ndarray, (1,), np.dtype("V1000000000"))), "an array of |V1000000000"),
        (_Pickled(_RECONSTRUCT, (np.ndarray, (-1,), b"b")), "an array of shape (-1,)"),
        (_Pickled(_RECONSTRUCT, (np.ndarray, (2**62, 2**62), b"b")), "bytes declared"),
        (_Pickled(_RECONSTRUCT, (np.dtype, (1,), b"b")), "refused an array of another type"),
    ],
)
def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path, array, message):
    path = raw_batch(tmp_path / "data_batch_1", array, [1])
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(UsageError) as info:
            data.read_batch(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path}: not a CIFAR-10 batch (UnpicklingError: ")
    assert message in str(info.value)
    assert peak < 1_000_000  # bytes: nothing of the declared size was made


def test_a_file_larger_than_any_batch_is_refused_unread(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        f.truncate(data.MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(UsageError, match=r"data_batch_1: not a CIFAR-10 batch \(61,440,001 bytes, more than"):
        data.read_batch(path)
