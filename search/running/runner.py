"""``search`` and ``worker``: check everything, prepare the study, run the workers, summarize."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.base.config import StudyConfig
from search.base.errors import SearchError, StorageUnavailable, TrialsFailing, UsageError
from search.base.names import CONFIRMS
from search.learning.data import load_split
from search.running.layout import available_memory, plan_workers, worker_bytes
from search.running.progress import Monitor, launched
from search.running.workers import (
    EXIT_INTERRUPTED,
    Budget,
    Stop,
    WorkerSpec,
    clean_stop,
    launch_seed,
    place_workers,
    run_worker,
    run_workers,
    usable_cores,
    visible_gpus,
)
from search.tuning.compare import outcome_lines
from search.tuning.faults import storage_failures
from search.tuning.notes import save_study_note
from search.tuning.storage import StorageOpener, StudyStorage, check_artifact_folder, check_connection_room
from search.tuning.study import prepare_study
from search.tuning.total import held


def ran_line(trials: list[FrozenTrial], seconds: float, confirming: bool, budget: Budget | None) -> str:
    """``ran 5 trials in 3.2 min: 4 complete, 1 pruned``; with none, why, in one sentence."""
    noun = "confirmation runs" if confirming else "trials"
    if not trials:
        if budget is not None and budget.expired:
            return (f"ran no {noun}: the time budget ({budget.seconds / 60:g} min) ended before "
                    "the first one started")
        return f"ran no {noun} in {seconds / 60:.1f} min"
    states = Counter(t.state.name for t in trials)
    done = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    return f"ran {len(trials)} {noun} in {seconds / 60:.1f} min: {done}"


def summary(
    study: optuna.Study,
    spec: WorkerSpec,
    first: int,
    storage: StudyStorage,
    seconds: float,
    codes: list[int],
    budget: Budget | None = None,
    stopped_by: str | None = None,
) -> str:
    """What this command did: its own trials only (``launched``), then where the study stands."""
    everything = study.get_trials(deepcopy=False)
    trials = [t for t in everything if launched(t, spec.launch, first) and t.state != TrialState.WAITING]
    lines = [ran_line(trials, seconds, CONFIRMS in study.user_attrs, budget)]
    if trials:
        ran = sum(n for t in trials if type(n := t.user_attrs.get("epochs_run")) is int and n > 0)
        full = len(trials) * spec.config.training.epochs
        lines.append(f"epochs: {ran} trained of the {full} of these trials unpruned ({ran / full:.0%})")
    lines += outcome_lines(study, storage)
    if stopped_by is not None:
        lines.append(f"stopped by {stopped_by}: no new trials were started")
    if spec.total is not None and (count := held(study)) >= spec.total:
        lines.append(f"the study holds {count} search trials, its TOTAL of {spec.total}: "
                     "no more are started, by this command or any other")
    if trials and budget is not None and budget.expired:
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
        f"launch seed {spec.launch}: on each of its trials as user attr launch; "
        f"--launch-seed {spec.launch} samples as it did"
    )
    lines.append(
        f"storage: {storage.masked} (study {study.study_name!r}, {len(everything)} trials in all)"
    )
    return "\n".join(lines)


def exit_code(codes: list[int], stopped: bool = False) -> int:
    """The command's exit code from its workers' (128 + N: killed by signal N), the same for one
    worker and for many. The first that applies wins:

    - 130, stopped by a signal (``stopped``, or a worker was): what the user or the scheduler
      asked for, told as such (a preempted job is requeued); what else ends then follows from it
      (a second signal kills the workers);
    - 3, the storage failed: it stops every worker of every command on the study;
    - 128 + N, a worker was killed by signal N from outside (137: SIGKILL, as the OOM killer
      sends), a fault of the host; its trial stays RUNNING until it is retried;
    - 2, a worker found bad input;
    - 4, trials failed in a row;
    - any other code (1: an unexpected error);
    - 0, every worker ended well.

    Faults of what the search runs on (the storage, the host) come before those of the search
    itself: they say it had no fair run, and trials failing then are no reason to debug it. Of
    the search's own, bad input explains failing trials, and a code that says what failed comes
    before the one that does not. Numeric order decides nothing; each worker's own line says
    what happened to it.
    """
    order = (EXIT_INTERRUPTED, StorageUnavailable.exit_code, "killed", UsageError.exit_code,
             TrialsFailing.exit_code, "other", 0)

    def rank(code: int) -> int:
        if code in order:
            return order.index(code)
        return order.index("killed" if code > 128 else "other")

    return min([*codes, *[EXIT_INTERRUPTED] * stopped], key=rank, default=0)


@dataclass(frozen=True)
class SearchRequest:
    """One search as a command asked for it, built once (by the command line, or ``confirm``).

    ``trials``: this command's trials at most. ``workers``: processes (None: auto, capped at the
    trials and at what memory holds, ``search.running.layout``). ``timeout`` (minutes): no trial
    starts after it; running ones finish. ``replay``: an earlier command's launch seed, to sample
    as it did (``--launch-seed``). ``total``: no trial starts once the study holds that many
    search trials, from whichever command or host (``--total``, ``search.tuning.total``).
    ``queued_only``: run only queued trials, never sample one; stop when none is left.
    """

    config: StudyConfig
    trials: int | None
    storage: StorageOpener = field(default_factory=StorageOpener)
    workers: int | None = 1
    study_name: str | None = None
    data_dir: str | None = None
    timeout: float | None = None
    replay: int | None = None
    total: int | None = None
    queued_only: bool = False


def run_search(request: SearchRequest) -> int:
    """Run the request's trials over its workers; return the exit code."""
    config, trials, data_dir = request.config, request.trials, request.data_dir
    split = load_split(data_dir, config.data)  # bad data stops us before storage is touched
    check_artifact_folder(config.storage.artifacts)  # an artifact lost later is only recorded
    storage = request.storage.open(config.storage)
    plan = plan_workers(request.workers, trials, usable_cores(), len(visible_gpus()), available_memory(),
                        worker_bytes(config.data))
    check_connection_room(storage, plan.workers)
    with storage_failures(storage):
        study, created = prepare_study(config, storage, request.study_name, split.fingerprint)
        config = config.model_copy(update={"study_name": study.study_name})
        if created:
            save_study_note(study, config, storage)
        # this command's trials: from the first one queued (a baseline, confirmation runs) or new
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        first, start = min((t.number for t in waiting), default=len(study.trials)), time.monotonic()
    spec = WorkerSpec(config, request.storage.url, study.study_name, data_dir, launch=launch_seed(request.replay),
                      queued_only=request.queued_only, total=request.total)
    seconds = None if request.timeout is None else request.timeout * 60
    budget, error = Budget(trials, seconds, shared=plan.workers > 1), None
    stop = Stop()
    print(plan, flush=True)
    with Monitor(study, first, trials, config.training.epochs, launch=spec.launch):
        if plan.workers == 1:
            (spec,) = place_workers(spec, 1, visible_gpus(), usable_cores())
            try:
                with clean_stop(stop=stop):
                    codes = [run_worker(spec, budget, split, storage, stop)]
            except SearchError as exc:  # told after the summary, as the last line
                error, codes = exc, [exc.exit_code]
        else:
            del split
            codes = run_workers(spec, plan.workers, budget, stop)  # each worker tells its own error
    code = exit_code(codes, stop.signal is not None)
    try:
        with storage_failures(storage):
            print(summary(study, spec, first, storage, time.monotonic() - start, codes, budget, stop.signal))
            save_study_note(study, config, storage)  # again, with what the search found so far
    except StorageUnavailable:
        if error is None and StorageUnavailable.exit_code not in codes:  # else it is told already
            raise
    if error is not None and error.exit_code == code:
        raise error
    if error is not None:  # a stop wins (``exit_code``): the error is told as a worker's own
        print(f"error: {error}", file=sys.stderr)
    return code
