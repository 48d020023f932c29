"""``search`` and ``worker``: check everything, prepare the study, run the workers, summarize."""

from __future__ import annotations

import signal
import time
from collections import Counter

import optuna

from search.config import StudyConfig
from search.data import load_split
from search.progress import Monitor
from search.storage import DEFAULT_URL, mask, open_storage
from search.study import prepare_study
from search.workers import Budget, WorkerSpec, run_worker, start_workers


def _wait(processes: list) -> None:
    """Wait for the workers; pass SIGTERM on to them, and kill them on a second Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in processes if p.is_alive()])
    interrupts = 0
    while any(p.is_alive() for p in processes):
        try:
            for p in processes:
                p.join(timeout=0.2)
        except KeyboardInterrupt:  # the workers got the same Ctrl-C from the terminal
            interrupts += 1
            if interrupts > 1:
                for p in processes:
                    p.kill()


def summary(study: optuna.Study, first: int, storage_url: str | None, seconds: float) -> str:
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
    lines.append(
        f"storage: {mask(storage_url or DEFAULT_URL)} "
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
) -> int:
    """Run ``trials`` trials in all over ``workers`` processes; return the exit code."""
    split = load_split(data_dir, config.data)  # bad data stops us before storage is touched
    study = prepare_study(config, open_storage(storage_url, config.storage), study_name)
    spec = WorkerSpec(config, storage_url, study.study_name, data_dir)
    budget = Budget(trials)
    first, start = len(study.trials), time.monotonic()
    with Monitor(study, first, trials):
        if workers == 1:
            code = run_worker(spec, budget, split)
        else:
            del split
            processes = start_workers(spec, workers, budget)
            _wait(processes)
            codes = [128 - c if c < 0 else c for c in (p.exitcode for p in processes)]
            code = max(codes)
    print(summary(study, first, storage_url, time.monotonic() - start))
    return code
