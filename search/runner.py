"""``search`` and ``worker``: check everything, prepare the study, run the workers, summarize."""

from __future__ import annotations

import signal
import time
from collections import Counter

import optuna

from search.config import StudyConfig
from search.dashboard import save_study_note
from search.data import load_split
from search.progress import Monitor
from search.storage import StudyStorage, open_storage
from search.study import prepare_study
from search.workers import (
    EXIT_INTERRUPTED,
    Budget,
    WorkerSpec,
    clean_stop,
    launch_id,
    place_workers,
    run_worker,
    run_workers,
    stop_requested,
    usable_cores,
    visible_gpus,
)


def summary(
    study: optuna.Study,
    first: int,
    storage: StudyStorage,
    seconds: float,
    codes: list[int],
    budget: Budget | None = None,
) -> str:
    trials = [t for t in study.get_trials(deepcopy=False) if t.number >= first]
    states = Counter(t.state.name for t in trials)
    lines = [
        f"ran {len(trials)} trials in {seconds / 60:.1f} min: "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    ]
    try:
        best = study.best_trial
        params = ", ".join(f"{k}={v:.3g}" for k, v in best.params.items())
        lines.append(f"best: trial {best.number}, val_accuracy {best.value:.4f} ({params})")
    except ValueError:
        lines.append("best: no complete trial yet")
    if signame := stop_requested():
        lines.append(f"stopped by {signame}: no new trials were started")
    if budget is not None and budget.expired:
        lines.append(
            f"the time budget ({budget.seconds / 60:g} min) ended the search: no trial was "
            "started after it, the running ones finished"
        )
    for index, code in enumerate(codes):
        if code > EXIT_INTERRUPTED:
            lines.append(
                f"worker {index} was killed by {signal.Signals(code - 128).name}: its trial stays "
                "RUNNING until its heartbeat is stale, then a worker fails and retries it"
            )
    lines.append(
        f"storage: {storage.masked} "
        f"(study {study.study_name!r}, {len(study.trials)} trials in all)"
    )
    return "\n".join(lines)


def run_search(
    config: StudyConfig,
    trials: int | None,
    workers: int = 1,
    storage_url: str | None = None,
    study_name: str | None = None,
    data_dir: str | None = None,
    timeout: float | None = None,
) -> int:
    """Run ``trials`` trials in all over ``workers`` processes; return the exit code.

    With ``timeout`` (minutes), no trial starts after that time; the running ones finish.
    """
    split = load_split(data_dir, config.data)  # bad data stops us before storage is touched
    storage = open_storage(storage_url, config.storage)
    study, created = prepare_study(config, storage, study_name, split.fingerprint)
    if created:
        save_study_note(study, config.model_copy(update={"study_name": study.study_name}))
    first, start = len(study.trials), time.monotonic()
    spec = WorkerSpec(config, storage_url, study.study_name, data_dir, launch=launch_id(first))
    budget = Budget(trials, None if timeout is None else timeout * 60)
    with Monitor(study, first, trials, config.training.epochs):
        if workers == 1:
            (spec,) = place_workers(spec, 1, visible_gpus(), usable_cores())
            with clean_stop():
                codes = [run_worker(spec, budget, split, storage)]
        else:
            del split
            codes = run_workers(spec, workers, budget)
    print(summary(study, first, storage, time.monotonic() - start, codes, budget))
    return max(codes)
