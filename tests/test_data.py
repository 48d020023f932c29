import hashlib
import pickle
import tarfile

import numpy as np
import pytest

from search import data
from search.config import Data
from search.errors import UsageError


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


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """Point Keras' download cache at an empty folder."""
    import keras.src.backend.config as keras_config

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    return home


def test_without_data_dir_keras_downloads_and_caches(tmp_path, cifar_dir, keras_home, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_dir, arcname="cifar-10-batches-py")
    monkeypatch.setattr(data, "ORIGIN", archive.as_uri())
    monkeypatch.setattr(data, "ORIGIN_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    folder = data.resolve_data_dir(None)
    assert folder.is_relative_to(keras_home)
    assert len(data.load_train(folder)[0]) == 500
    archive.unlink()  # a second call is served from the cache, with no download
    assert data.resolve_data_dir(None) == folder


def test_offline_without_data_dir_names_both_ways(tmp_path, keras_home, monkeypatch):
    monkeypatch.setattr(data, "ORIGIN", (tmp_path / "unreachable.tar.gz").as_uri())
    with pytest.raises(UsageError) as info:
        data.resolve_data_dir(None)
    assert "set DATA_DIR" in str(info.value) and "download" in str(info.value)
