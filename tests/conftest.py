"""Shared fixtures: synthetic CIFAR-10 batches in the canonical format, tiny configs, servers."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy

from search.config import StudyConfig, parse_config

REPO = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """One batch as the original Python-2 pickles have it: bytes keys, planar uint8 rows."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {b"batch_label": b"synthetic", b"labels": [int(v) for v in labels], b"data": data,
             b"filenames": [f"{i}.png".encode() for i in range(len(images))]}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose colour depends on the class, so a CNN learns them in an epoch or two."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    palette = np.random.default_rng(0).integers(0, 256, size=(10, 3))
    noise = rng.normal(0, 40, size=(n, 32, 32, 3))
    images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def make_cifar_folder(folder: Path, per_batch: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", *synthetic_images(per_batch, seed=i))
    write_batch(folder / "test_batch", *synthetic_images(per_batch, seed=99))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
            "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 training and 100 test images in the canonical cifar-10-batches-py layout."""
    return make_cifar_folder(tmp_path_factory.mktemp("data") / "cifar-10-batches-py")


def tiny_raw(tmp_path: Path, **overrides: object) -> dict:
    raw = {
        "study_name": "tiny",
        "seed": 1,
        "data": {"train_size": 400, "val_size": 100},
        "training": {"epochs": 2, "batch_size": 50},
        "sampler": {"name": "tpe", "n_startup_trials": 2},
        "pruner": {"name": "none"},
        "storage": {"artifacts": str(tmp_path / "artifacts")},
    }
    raw.update(overrides)
    return raw


@pytest.fixture
def tiny_config(tmp_path: Path) -> StudyConfig:
    return parse_config(tiny_raw(tmp_path), "tiny")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _server_database(admin_url: str, create: str, drop: str):
    """A fresh database on a local server for one test; skip (or fail in CI) if none answers."""
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"search_test_{uuid.uuid4().hex[:10]}"
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(create.format(name=name))
    except sqlalchemy.exc.OperationalError as exc:
        message = f"no database server at {engine.url.render_as_string()}: {str(exc.orig).strip()[:80]}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield name
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(drop.format(name=name))
        engine.dispose()


@pytest.fixture
def postgres_url():
    admin = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    for name in _server_database(admin, 'CREATE DATABASE "{name}"', 'DROP DATABASE "{name}" WITH (FORCE)'):
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def mysql_url():
    admin = "mysql+pymysql://root@127.0.0.1:3306/test"
    for name in _server_database(admin, "CREATE DATABASE `{name}`", "DROP DATABASE `{name}`"):
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
