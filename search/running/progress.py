"""What a search shows while it runs, read from the storage: this command's trials, whichever
worker ran them (``launched``).

In a terminal: a progress bar whose ETA is followed by the best value so far and the running
trials' epoch and last validation accuracy, and one line per finished trial. Elsewhere (a log
file, CI, nohup): no redraws, one line per finished trial and a status line every few minutes.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from search.base.config import PARAMS, model_values, trial_label
from search.base.names import CONFIRMS
from search.tuning.storage import STORAGE_ERRORS

STATUS_EVERY = 300.0  # seconds between status lines when the output is not a terminal
# The text first and the bar in the space left, so that an 80-column terminal shows the text.
BAR = "{n_fmt}/{total_fmt} trials [{elapsed}<{remaining}{postfix}] {bar}"
NOTES = ("fail_reason", "artifact_error")


def launched(trial: FrozenTrial, launch: int | None, first: int) -> bool:
    """Whether ``trial`` was run by the command with seed ``launch`` (None: any) that started at
    trial ``first``."""
    return trial.number >= first and launch in (None, trial.user_attrs.get("launch"))


def _value(name: str, value: float | None) -> str:
    """``l1=off``, ``l2=3.40e-04``, ``dropout=0.31``: as the model used it."""
    if value is None:
        return f"{name}=?"
    if name == "dropout":
        return f"{name}={value:.2f}"
    return f"{name}={'off' if value == 0 else f'{value:.2e}'}"


def describe_trial(trial: FrozenTrial) -> str:
    """``trial 7 COMPLETE l1=off l2=3.40e-04 dropout=0.31 val_accuracy=0.6512 epochs=20 412.3s``,
    then why it failed or why its artifacts are missing, if so."""
    values = model_values(trial)
    value = max(trial.intermediate_values.values(), default=float("nan"))
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_complete and trial.datetime_start
        else float("nan")
    )
    return (
        f"{trial_label(trial)} {trial.state.name:<8} "
        + " ".join(_value(name, values.get(name)) for name in PARAMS)
        + f" val_accuracy={value:.4f} "
        f"epochs={trial.user_attrs.get('epochs_run', 0)} {seconds:.1f}s"
        + "".join(f" {key}: {trial.user_attrs[key]}" for key in NOTES if key in trial.user_attrs)
    )


def running(trial: FrozenTrial, epochs: int) -> str:
    """``trial 8 epoch 2/20 val 0.5510``: the epoch it trains, the last one's val_accuracy."""
    values = trial.intermediate_values  # steps are epochs counted from 1
    if not values:
        return f"{trial_label(trial)} epoch 1/{epochs}"
    last = max(values)
    return f"{trial_label(trial)} epoch {min(last + 1, epochs)}/{epochs} val {values[last]:.4f}"


def status(trials: list[FrozenTrial], epochs: int, confirming: bool = False) -> str:
    """The best of ``trials`` so far (by search: one run each; none while ``confirming``, whose
    runs repeat configurations) and those of them running, in one short line."""
    values = {
        t.number: t.value for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)
    }
    parts = []
    if values and not confirming:
        best = max(values, key=values.__getitem__)
        parts.append(f"best by search {values[best]:.4f} (trial {best}, unconfirmed)")
    parts += [running(t, epochs) for t in trials if t.state == TrialState.RUNNING]
    return "; ".join(parts)


class Monitor:
    """Polls the study every ``interval`` s and reports this command's trials (``launched``);
    ``clock`` (seconds) times the status lines."""

    def __init__(
        self,
        study: optuna.Study,
        first: int,
        total: int | None,
        epochs: int,
        interval: float = 1.0,
        status_every: float = STATUS_EVERY,
        file: TextIO | None = None,
        launch: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.study, self.first, self.total, self.epochs = study, first, total, epochs
        self.launch = launch
        self.confirming = CONFIRMS in study.user_attrs  # runs of make confirm, not a search
        self.interval, self.status_every = interval, status_every
        self.file = file or sys.stdout
        self.seen: set[int] = set()
        self.clock = clock
        self.started = self.last_status = clock()
        self.bar = (
            tqdm(total=total, bar_format=BAR, dynamic_ncols=True, file=self.file)
            if self.file.isatty()
            else None
        )
        noun = "confirmation runs" if self.confirming else "trials"
        trials = f"{total} {noun}" if total else noun
        self._line(f"study {study.study_name}: {trials} from number {first}, {epochs} epochs at most")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def _status_line(self, now: str) -> str:
        done, minutes = len(self.seen), (self.clock() - self.started) / 60
        line = f"[{time.strftime('%H:%M:%S')}] {done}/{self.total or '?'} trials finished"
        line += f" in {minutes:.1f} min"
        if done and self.total and done < self.total:
            line += f", about {minutes / done * (self.total - done):.0f} min left"
        return f"{line}; {now}" if now else line

    def poll(self) -> None:
        trials = [t for t in self.study.get_trials(deepcopy=False) if launched(t, self.launch, self.first)]
        for trial in trials:
            if trial.number not in self.seen and trial.state.is_finished():
                self.seen.add(trial.number)
                self._line(describe_trial(trial))
                if self.bar is not None:
                    self.bar.update()
        now = status(trials, self.epochs, self.confirming)
        if self.bar is not None:
            self.bar.set_postfix_str(now)
        elif self.clock() - self.last_status >= self.status_every:
            self.last_status = self.clock()
            self._line(self._status_line(now))

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
        if self.bar is not None:
            self.bar.close()
