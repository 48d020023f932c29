"""What a search shows while it runs: a progress bar and one line per trial it finished."""

from __future__ import annotations

import threading

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from search.storage import STORAGE_ERRORS

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
NOTES = ("fail_reason", "artifact_error")


def launched(trial: FrozenTrial, launch: int, first: int) -> bool:
    """Whether ``trial`` was run by the command with seed ``launch`` that started at trial ``first``."""
    return trial.number >= first and trial.user_attrs.get("launch") == launch


def describe(trial: FrozenTrial) -> str:
    """``trial 7 COMPLETE l1=1.2e-05 l2=3.4e-04 dropout=0.31 val_accuracy=0.6512 epochs=20 412.3s``,
    then why it failed or why its artifacts are missing, if so."""
    p = trial.params
    value = max(trial.intermediate_values.values(), default=float("nan"))
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_complete and trial.datetime_start
        else float("nan")
    )
    return (
        f"trial {trial.number:>4} {trial.state.name:<8} "
        f"l1={p.get('l1', float('nan')):.2e} l2={p.get('l2', float('nan')):.2e} "
        f"dropout={p.get('dropout', float('nan')):.2f} val_accuracy={value:.4f} "
        f"epochs={trial.user_attrs.get('epochs_run', 0)} {seconds:.1f}s"
        + "".join(f" {key}: {trial.user_attrs[key]}" for key in NOTES if key in trial.user_attrs)
    )


class Monitor:
    """Polls the study and reports the trials of this command (``launched``) as they finish."""

    def __init__(
        self, study: optuna.Study, launch: int, first: int, total: int | None, interval: float = 1.0
    ):
        self.study, self.launch, self.first, self.interval = study, launch, first, interval
        self.seen: set[int] = set()
        self.bar = tqdm(total=total, unit="trial", desc=study.study_name, dynamic_ncols=True)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        for trial in self.study.get_trials(deepcopy=False, states=FINISHED):
            if trial.number not in self.seen and launched(trial, self.launch, self.first):
                self.seen.add(trial.number)
                self.bar.write(describe(trial))
                self.bar.update()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.poll()
            except STORAGE_ERRORS:  # the workers say what it is
                pass

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        try:
            self.poll()
        except STORAGE_ERRORS:
            pass
        self.bar.close()
