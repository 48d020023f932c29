"""``search`` and ``worker``: check everything, prepare the study, run the workers, summarize."""

from __future__ import annotations

import signal
import time
from collections import Counter

import optuna
from optuna.trial import TrialState

from search.compare import outcome_lines, shown_params
from search.config import StudyConfig
from search.dashboard import save_study_note
from search.data import load_split
from search.layout import available_memory, plan_workers, worker_bytes
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
    started = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    trials = [t for t in study.get_trials(deepcopy=False, states=started) if t.number >= first]
    states = Counter(t.state.name for t in trials)
    lines = [
        f"ran {len(trials)} trials in {seconds / 60:.1f} min: "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    ]
    try:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, val_accuracy {best.value:.4f} ({shown_params(best)})")
    except ValueError:
        lines.append("best: no complete trial yet")
    lines += outcome_lines(study, storage)
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
    workers: int | None = 1,
    storage_url: str | None = None,
    study_name: str | None = None,
    data_dir: str | None = None,
    timeout: float | None = None,
) -> int:
    """Run ``trials`` trials in all over ``workers`` processes (None: auto); return the exit code.

    The number is capped at the trials and at what memory holds (``search.layout``). With
    ``timeout`` (minutes), no trial starts after that time; the running ones finish.
    """
    split = load_split(data_dir, config.data)  # bad data stops us before storage is touched
    storage = open_storage(storage_url, config.storage)
    study, created = prepare_study(config, storage, study_name, split.fingerprint)
    if created:
        save_study_note(study, config.model_copy(update={"study_name": study.study_name}), storage)
    # this command's trials: from the first one queued (a baseline, confirmation runs) or new
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    first, start = min((t.number for t in waiting), default=len(study.trials)), time.monotonic()
    spec = WorkerSpec(config, storage_url, study.study_name, data_dir, launch=launch_id(len(study.trials)))
    budget = Budget(trials, None if timeout is None else timeout * 60)
    plan = plan_workers(workers, trials, usable_cores(), len(visible_gpus()), available_memory(),
                        worker_bytes(config.data))
    print(plan, flush=True)
    with Monitor(study, first, trials, config.training.epochs):
        if plan.workers == 1:
            (spec,) = place_workers(spec, 1, visible_gpus(), usable_cores())
            with clean_stop():
                codes = [run_worker(spec, budget, split, storage)]
        else:
            del split
            codes = run_workers(spec, plan.workers, budget)
    print(summary(study, first, storage, time.monotonic() - start, codes, budget))
    # the note again, with what the search has found so far
    save_study_note(study, config.model_copy(update={"study_name": study.study_name}), storage)
    return max(codes)
