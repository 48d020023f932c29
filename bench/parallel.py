"""Parallel search figures: trials per minute with 1, 2 and 4 workers on PostgreSQL, storage
time per trial on SQLite and PostgreSQL, and the time from a worker's SIGKILL to its retry.

Run: ``.venv/bin/python -m bench.parallel [--quick]``. Trials per minute and the SIGKILL test run
real searches through the CLI (1 epoch on 100 synthetic images); the storage time uses
``bench.storage``'s objective, which trains nothing. Needs the PostgreSQL server at
``$SEARCH_TEST_POSTGRES`` (default: local, user postgres); the figures depend on how busy the
machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna

from search.base.config import Storage
from search.testing import (
    POSTGRES_ADMIN,
    make_cifar_folder,
    server_database,
    tiny_raw,
    wait_for_running,
)
from search.testing import (
    start_search as launch,
)
from search.tuning.storage import open_storage


def start_search(folder: Path, url: str, trials: int, workers: int, **storage: object) -> subprocess.Popen:
    raw = tiny_raw(folder, data={"train_size": 100, "val_size": 50}, training={"epochs": 1, "batch_size": 50})
    raw["storage"].update(storage)
    return launch(raw, folder, url, trials, workers, folder / "cifar-10-batches-py",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def trials_per_minute(folder: Path, workers: int, trials: int) -> dict[str, float]:
    """Wall clock of the whole command, and the rate once the workers are up."""
    with server_database(POSTGRES_ADMIN) as url:
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
    study = optuna.create_study(study_name="overhead", storage=open_storage(url, Storage()).rdb,
                                sampler=optuna.samplers.RandomSampler(0), direction="maximize")
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return round(1000 * (time.perf_counter() - start) / trials, 1)


def kill_to_retry_seconds(folder: Path, url: str) -> float:
    """SIGKILL one of two workers mid-trial; seconds until its parameters start again."""
    process = start_search(folder, url, trials=8, workers=2, heartbeat_interval=1, grace_period=2)
    victim = wait_for_running(url, "tiny", process)
    if victim is None:
        raise RuntimeError("the search ended before a trial ran")
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    killed_at = datetime.now()
    process.wait()
    retry = [t for t in optuna.load_study(study_name="tiny", storage=url).trials
             if t.system_attrs.get("failed_trial") == victim.number]
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
        with server_database(POSTGRES_ADMIN) as url:
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
