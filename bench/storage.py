"""Trials per second that 1, 2 and 4 worker processes complete on one study, without training.

Each trial does what a real one does to the storage: the sampler and pruner of
``study_configs/cifar10.yaml`` (TPE, successive halving), three suggestions, a dozen user attrs, 20 reports each followed
by ``should_prune``, and heartbeats.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import optuna

from bench.common import REPO, median_range, postgres_url
from search.base.config import Storage, load_config
from search.tuning.storage import mask, open_storage
from search.tuning.study import make_pruner, make_sampler

EPOCHS = 20
CONTEXT = mp.get_context("spawn")  # no TensorFlow in these processes
SHIPPED = REPO / "study_configs" / "cifar10.yaml"


def objective(trial: optuna.Trial) -> float:
    for name in ("l1", "l2", "dropout"):
        trial.suggest_float(name, 1e-6, 0.5)
    for i in range(12):
        trial.set_user_attr(f"attr{i}", i)
    for epoch in range(EPOCHS):
        trial.report(0.5 + 0.01 * epoch, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return 0.7


def _worker(url: str, study_name: str, index: int, trials: int, start: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url, Storage()).rdb)
    config = load_config(SHIPPED)
    study.sampler = make_sampler(config.sampler, seed=index)
    study.pruner = make_pruner(config.pruner, EPOCHS)
    start.wait()
    study.optimize(objective, n_trials=trials)


def trials_per_second(url: str, workers: int, trials: int, name: str) -> float:
    """Trials per second once all ``workers`` processes are connected and released together."""
    optuna.create_study(study_name=name, storage=open_storage(url, Storage()).rdb, direction="maximize")
    start = CONTEXT.Barrier(workers + 1)
    processes = [
        CONTEXT.Process(target=_worker, args=(url, name, i, trials, start)) for i in range(workers)
    ]
    for p in processes:
        p.start()
    start.wait()
    began = time.perf_counter()
    for p in processes:
        p.join()
    if any(p.exitcode for p in processes):
        raise RuntimeError(f"a storage bench worker failed on {mask(url)}")
    return workers * trials / (time.perf_counter() - began)


def by_workers(url: str, trials: int, repeats: int) -> dict[str, Any]:
    return {
        f"{n}_workers": median_range(
            [trials_per_second(url, n, trials, f"storage-{n}-{r}") for r in range(repeats)], 1
        )
        for n in (1, 2, 4)
    }


def run(sqlite_url: str, trials: int, repeats: int) -> dict[str, Any]:
    """Trials/s with 1, 2 and 4 workers (``trials`` each) on SQLite and on a fresh PostgreSQL."""
    result: dict[str, Any] = {"trials_per_worker": trials, "reports_per_trial": EPOCHS}
    result["sqlite"] = by_workers(sqlite_url, trials, repeats)
    with postgres_url() as url:
        result["postgresql"] = by_workers(url, trials, repeats) if url else {"skipped": "no server"}
    return result
