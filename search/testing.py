"""Helpers that the tests and the benchmarks share (as ``optuna.testing`` does for Optuna).

Synthetic CIFAR-10 batches in the canonical format, throwaway databases on a local server, tiny
study configs, a search launched through the real command line, a ``fit`` that plays given
accuracies, and a TCP relay to take a database away.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import sqlalchemy
import yaml

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN = os.environ.get("SEARCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCREENSHOTS = REPO / "test-artifacts"  # what the browser tests saw, kept for a person to look at
MYSQL_ADMIN = os.environ.get("SEARCH_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"  # CI: a missing service fails, not skips


def unavailable(reason: str) -> NoReturn:
    """A service a test needs is missing: skip the test, or fail it under REQUIRE_SERVICES=1 (CI)."""
    import pytest

    if REQUIRE_SERVICES:
        pytest.fail(reason)
    pytest.skip(reason)


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
                 data_dir: Path, *, wrapper: tuple[str, ...] = (), extra: tuple[str, ...] = (),
                 **popen: Any) -> subprocess.Popen:
    """``python -m search search`` on ``config`` (written to ``folder/study.yaml``), not waited for.

    ``wrapper`` goes before it (such as ``ip netns exec NAME``), ``extra`` flags after it.
    """
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["search", "--config", str(path), "--storage", url, "--trials", str(trials),
            "--workers", str(workers), "--data-dir", str(data_dir), *extra]
    return subprocess.Popen([*wrapper, sys.executable, "-m", "search", *args], cwd=REPO, **popen)


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


PGBOUNCER = os.environ.get("SEARCH_TEST_PGBOUNCER", "/usr/sbin/pgbouncer")
PGBOUNCER_START_SECONDS = 15.0


class PoolerUnavailable(RuntimeError):
    """PgBouncer is not installed here, or would not start (its log's last line says why)."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _pgbouncer_ini(server: sqlalchemy.engine.URL, folder: Path, listen: str, port: int, pool_size: int) -> str:
    users = folder / "users.txt"
    users.write_text(f'"{server.username or "postgres"}" ""\n')
    return "\n".join([
        "[databases]",
        # Every database name goes to the same name on the server (throwaway databases included).
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}",
        "[pgbouncer]",
        f"listen_addr = {listen}",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"admin_users = {server.username or 'postgres'}",  # its console: SHOW POOLS, SHOW CONFIG
        f"auth_file = {users}",
        "pool_mode = transaction",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 1000",
        f"logfile = {folder / 'pgbouncer.log'}",
        f"pidfile = {folder / 'pgbouncer.pid'}",
        "",
    ])


def _start_pgbouncer(ini: Path, log: Path, port: int, listen: str) -> subprocess.Popen | None:
    """PgBouncer on ``ini``, once it listens; None if its port was taken meanwhile (try another)."""
    # PgBouncer refuses to run as root; -u drops to an unprivileged user (CI runs as root).
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen([PGBOUNCER, *user, str(ini)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    ready = f"listening on {listen}:{port}"
    deadline = time.monotonic() + PGBOUNCER_START_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if ready in text:
            return process
        if process.poll() is not None:
            if "Address already in use" in text:
                return None
            last = (text.strip().splitlines() or ["no log"])[-1]
            raise PoolerUnavailable(f"PgBouncer exited with {process.returncode}: {last}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise PoolerUnavailable(f"PgBouncer did not listen within {PGBOUNCER_START_SECONDS:.0f}s")


@contextmanager
def pgbouncer(database_url: str, *, listen: str = "127.0.0.1", pool_size: int = 20) -> Iterator[str]:
    """A real PgBouncer in transaction pooling mode in front of ``database_url``'s PostgreSQL
    (trust authentication, its own folder, a free port on ``listen``); yields ``database_url``
    pointed at it, and stops it (by its PID) afterwards.

    Raises ``PoolerUnavailable`` if PgBouncer is not installed or does not start.
    """
    if not os.access(PGBOUNCER, os.X_OK):
        raise PoolerUnavailable(f"PgBouncer is not installed at {PGBOUNCER} (Debian package pgbouncer)")
    server = sqlalchemy.make_url(database_url)
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    os.chmod(folder, 0o777)  # PgBouncer, run as nobody, writes its log and pidfile here
    process = None
    try:
        for _ in range(20):  # a port found free may be taken before PgBouncer binds it: try another
            port = _free_port(listen)
            ini = folder / "pgbouncer.ini"
            ini.write_text(_pgbouncer_ini(server, folder, listen, port, pool_size))
            (folder / "pgbouncer.log").unlink(missing_ok=True)
            if (process := _start_pgbouncer(ini, folder / "pgbouncer.log", port, listen)) is not None:
                break
        else:
            raise PoolerUnavailable(f"no free port for PgBouncer on {listen}")
        yield server.set(host=listen, port=port).render_as_string(hide_password=False)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def played_fit(accuracies: list[float], then: Exception | None = None):
    """A ``fit`` that trains nothing: it plays ``accuracies`` as epochs through the callbacks it
    is given (history, timer, pruning...), then raises ``then`` if any."""

    def fit(model, train, val, training, epochs, callbacks, verbose=0):
        for callback in callbacks:
            callback.set_model(model)
            callback.on_train_begin()
        for epoch, accuracy in enumerate(accuracies):
            logs = {"loss": 1.0, "accuracy": accuracy, "val_loss": 1.0, "val_accuracy": accuracy}
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
                callback.on_epoch_end(epoch, logs)
        if then is not None:
            raise then

    return fit


class Proxy:
    """A TCP relay on loopback to the real server that can be taken down and brought back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._sockets: list[socket.socket] = []
        self.port = 0  # the first listener takes a free port, bound with no gap; up() rebinds it
        self.up()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        """Close the listener and every relayed connection, as a server restart does."""
        for s in [self._listener, *self._sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
