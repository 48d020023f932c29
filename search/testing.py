"""Helpers that the tests and the benchmarks share (as ``optuna.testing`` does for Optuna).

Synthetic CIFAR-10 batches in the canonical format, throwaway databases on a local server, tiny
study configs, and a search launched through the real command line.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy
import yaml

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN = os.environ.get("SEARCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCREENSHOTS = REPO / "test-artifacts"  # what the browser tests saw, kept for a person to look at
MYSQL_ADMIN = os.environ.get("SEARCH_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"  # CI: a missing service fails, not skips


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
    """A ``cifar-10-batches-py`` folder of synthetic images: 5 training batches and a test batch."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", *synthetic_images(per_batch, seed=i))
    write_batch(folder / "test_batch", *synthetic_images(per_batch, seed=99))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
            "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def tiny_raw(tmp_path: Path, **overrides: Any) -> dict:
    """A study config (as a mapping) small enough to train in seconds on the synthetic batches."""
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


@contextmanager
def server_database(admin_url: str) -> Iterator[str]:
    """A fresh database on a PostgreSQL or MySQL server, dropped afterwards; yields its URL.

    Raises SQLAlchemy's ``OperationalError`` if no server answers at ``admin_url``.
    """
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"search_test_{uuid.uuid4().hex[:10]}"
    quote = engine.dialect.identifier_preparer.quote
    force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quote(name)}")
        try:
            yield engine.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE {quote(name)}{force}")
    finally:
        engine.dispose()


def start_search(config: dict, folder: Path, url: str, trials: int, workers: int,
                 data_dir: Path, **popen: Any) -> subprocess.Popen:
    """``python -m search search`` on ``config`` (written to ``folder/study.yaml``), not waited for."""
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["search", "--config", str(path), "--storage", url, "--trials", str(trials),
            "--workers", str(workers), "--data-dir", str(data_dir)]
    return subprocess.Popen([sys.executable, "-m", "search", *args], cwd=REPO, **popen)


def wait_for_running(url: str, study_name: str, process: subprocess.Popen) -> Any:
    """The first trial seen training (its worker attrs are set), polling the storage.

    Returns None if ``process`` ended first.
    """
    import optuna
    from optuna.trial import TrialState

    while process.poll() is None:
        try:
            trials = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
        except (KeyError, optuna.exceptions.StorageInternalError):
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and "pid" in t.user_attrs]
        if running:
            return running[0]
        time.sleep(0.1)
    return None


def trial_distributions(config: Any, params: dict) -> dict:
    """The distributions the objective gives ``params`` (``l1_on`` first, ``l1`` when on)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = config.search_space
    return {
        name: CategoricalDistribution([True, False]) if name.endswith("_on")
        else FloatDistribution(*getattr(space, name).sampled_bounds, log=getattr(space, name).log)
        for name in params
    }


def add_trials(study: Any, config: Any, values: list[float | None]) -> None:
    """Trials without training: ``None`` is a pruned trial, a number a complete one.

    The first value goes to the queued baseline trial (trial 0), if the study has one.
    ``study`` is an ``optuna.Study``, ``config`` its ``StudyConfig``; the parameters are stored
    as the objective stores them (``l1_on`` first, ``l1`` only when on).
    """
    from optuna.trial import TrialState, create_trial

    from search.tuning.objective import suggest

    for value in values:
        number = len(study.trials)
        state = TrialState.PRUNED if value is None else TrialState.COMPLETE
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial = study.ask()  # the queued trial, with its own params
            suggest(trial, config.search_space)
            number, params = trial.number, trial.params
        else:
            point = {name: low + (high - low) / (number + 2)
                     for name, (low, high) in ((n, p.sampled_bounds) for n, p in config.search_space)}
            trial, params = None, config.search_space.trial_params(point)
        space = trial_distributions(config, params)
        # what the objective records
        attrs = {"best_epoch": 2, "epochs_run": 2, "seed": 1000 + number,
                 "effective_params": config.search_space.effective(params)}
        curve = {} if value is None else {0: value / 2, 1: value}
        if trial is None:
            study.add_trial(create_trial(params=params, distributions=space, value=value, state=state,
                                         user_attrs=attrs, intermediate_values=curve))
            continue
        for key, attr in attrs.items():
            trial.set_user_attr(key, attr)
        for step, intermediate in curve.items():
            trial.report(intermediate, step)
        study.tell(trial, value, state=state)
