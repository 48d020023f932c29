"""Parallel search figures: trials per minute with 1, 2 and 4 workers on PostgreSQL, storage
time per trial on SQLite and PostgreSQL, and the time from a worker's SIGKILL to its retry.

Run: ``.venv/bin/python -m bench.parallel [--quick]``. Uses tiny synthetic data and a 1-epoch
objective, a PostgreSQL server at ``$BENCH_POSTGRES`` (default: local, user postgres) and the
real CLI; the figures depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import optuna
import sqlalchemy
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search.config import Storage  # noqa: E402
from search.storage import open_storage  # noqa: E402
from tests.conftest import make_cifar_folder, tiny_raw  # noqa: E402

POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    admin = sqlalchemy.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sqlalchemy.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def start_search(folder: Path, url: str, trials: int, workers: int, **storage: object) -> subprocess.Popen:
    raw = tiny_raw(folder, data={"train_size": 100, "val_size": 50}, training={"epochs": 1, "batch_size": 50})
    raw["storage"].update(storage)
    config = folder / "study.yaml"
    config.write_text(yaml.safe_dump(raw))
    args = ["search", "--config", str(config), "--storage", url, "--trials", str(trials),
            "--workers", str(workers), "--data-dir", str(folder / "cifar-10-batches-py")]
    return subprocess.Popen([sys.executable, "-m", "search", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def trials_per_minute(folder: Path, workers: int, trials: int) -> dict[str, float]:
    """Wall clock of the whole command, and the rate once the workers are up."""
    with postgres_database() as url:
        start = time.monotonic()
        if start_search(folder, url, trials, workers).wait() != 0:
            raise RuntimeError(f"search with {workers} workers failed")
        wall = time.monotonic() - start
        done = optuna.load_study(study_name="tiny", storage=url).trials
    first_end = sorted(t.datetime_complete for t in done)[workers - 1]  # every worker is warm
    last_end = max(t.datetime_complete for t in done)
    steady = (len(done) - workers) / max((last_end - first_end).total_seconds(), 1e-9)
    return {"wall_s": round(wall, 1), "per_min_overall": round(60 * len(done) / wall, 1),
            "per_min_after_startup": round(60 * steady, 1)}


def storage_ms_per_trial(url: str, trials: int) -> float:
    """Ask, suggest, a dozen user attrs, a report and prune check per epoch, tell; heartbeats on."""
    from bench.storage import objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="overhead", storage=open_storage(url, Storage()),
                                sampler=optuna.samplers.RandomSampler(0), direction="maximize")
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return round(1000 * (time.perf_counter() - start) / trials, 1)


def kill_to_retry_seconds(folder: Path, url: str) -> float:
    """SIGKILL one of two workers mid-trial; seconds until its parameters start again."""
    process = start_search(folder, url, trials=8, workers=2, heartbeat_interval=1, grace_period=2)
    storage = optuna.storages.RDBStorage(url)
    while process.poll() is None:
        try:
            running = [t for t in optuna.load_study(study_name="tiny", storage=storage).trials
                       if t.state == optuna.trial.TrialState.RUNNING and "pid" in t.user_attrs]
        except KeyError:
            running = []
        if running:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("the search ended before a trial ran")
    os.kill(running[0].user_attrs["pid"], signal.SIGKILL)
    killed_at = datetime.now()
    process.wait()
    retry = [t for t in optuna.load_study(study_name="tiny", storage=storage).trials
             if t.system_attrs.get("failed_trial") == running[0].number]
    if not retry or retry[0].datetime_start is None:
        raise RuntimeError("the killed trial was not retried")
    return round((retry[0].datetime_start - killed_at).total_seconds(), 1)


def run(quick: bool = False) -> dict:
    """All the figures, as a JSON-ready dict."""
    per_worker = 2 if quick else 4
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_cifar_folder(folder / "cifar-10-batches-py")
        figures: dict = {"objective": "1 epoch, 100 synthetic images, batch 50", "cpus": os.cpu_count()}
        figures["postgresql_trials_per_minute"] = {
            f"{n}_workers": trials_per_minute(folder, n, per_worker * n) for n in (1, 2, 4)
        }
        n = 20 if quick else 100
        with postgres_database() as url:
            figures["storage_ms_per_trial"] = {
                "sqlite": storage_ms_per_trial(f"sqlite:///{folder / 'overhead.db'}", n),
                "postgresql": storage_ms_per_trial(url, n),
            }
        figures["sigkill_to_retry_s"] = {
            "heartbeat_interval": 1, "grace_period": 2,
            "seconds": kill_to_retry_seconds(folder, f"sqlite:///{folder / 'kill.db'}"),
        }
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
