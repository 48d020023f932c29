"""One trial: sample L1, L2 and dropout, train the CNN, report val accuracy each epoch.

Values reach Optuna rounded to ``DECIMALS`` places, as every view shows them: the dashboard's
best value reads 0.419, not 0.4189999997615814 (float32 accuracy in a float64).
"""

from __future__ import annotations

import math
import sys
from typing import Callable

import keras
import numpy as np
import optuna
import tensorflow as tf
from optuna_integration.keras import KerasPruningCallback

from search.base.config import PARAMS, SearchSpace, StudyConfig, flag
from search.base.seeds import derive_seed
from search.base.stats import DECIMALS
from search.learning.data import Split
from search.learning.training import (
    EpochTimer,
    StopOnRequest,
    fit,
    seeded_model,
    summarize,
)


class EpochPruningCallback(KerasPruningCallback):
    """Optuna's Keras pruning callback, reporting epochs counted from 1 as Keras prints them.

    So a trial's steps, its ``best_epoch`` and ``epochs_run`` count alike, and a pruner's
    ``min_resource`` is epochs trained (``make_pruner`` keeps the median's warm-up in epochs).
    A trial that must finish (the baseline: the study's reference) reports and is asked like any
    other, so it counts at the rungs, but is not stopped.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, prunable: bool = True) -> None:
        super().__init__(trial, monitor)
        self.monitor, self.prunable = monitor, prunable

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = dict(logs or {})
        if logs.get(self.monitor) is not None:  # stored as shown: 0.419, not 0.41899999976
            logs[self.monitor] = round(float(logs[self.monitor]), DECIMALS)
        try:
            super().on_epoch_end(epoch + 1, logs)
        except optuna.TrialPruned:
            if self.prunable:
                raise


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, float]:
    """Sample each hyperparameter and return the values the model uses (0: off).

    A penalty that may be off (``off_below``) is a conditional parameter: ``<name>_on`` first,
    then its strength only when on, so the storage holds what the model used. A fixed value is
    recorded as a one-point range.
    """
    params = {}
    for name in PARAMS:
        p = getattr(space, name)
        if p.off_below is not None and not trial.suggest_categorical(flag(name), [True, False]):
            params[name] = 0.0
            continue
        low, high = p.sampled_bounds
        params[name] = trial.suggest_float(name, low, high, log=p.log and p.value is None)
    return params


def _fixed_seed(trial: optuna.Trial) -> int | None:
    """The seed a trial was enqueued with (a confirmation run, or a retry of a crashed trial)."""
    seed = trial.user_attrs.get("seed")
    if seed is not None and not (type(seed) is int and 0 <= seed < 2**32):
        raise ValueError(f"trial {trial.number}: user attr seed {seed!r} is not a seed (0 to 2**32-1)")
    return seed


class Objective:
    """Trains one model per trial on a split loaded once per process."""

    def __init__(
        self,
        config: StudyConfig,
        split: Split,
        on_trial_end: Callable[[optuna.Trial, dict[str, list[float]]], None] | None = None,
        should_stop: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.config = config
        self.on_trial_end = on_trial_end
        self.should_stop = should_stop
        self._train = tf.constant(split.x_train), tf.constant(split.y_train)
        self._val = tf.constant(split.x_val), tf.constant(split.y_val)

    def __call__(self, trial: optuna.Trial) -> float:
        effective = suggest(trial, self.config.search_space)
        seed = _fixed_seed(trial)
        if seed is None:
            seed = derive_seed(self.config.seed, trial.number)
        training = self.config.training

        model = seeded_model(effective, training, seed)
        attrs = {"seed": seed, "effective_params": effective, "n_params": model.count_params()}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

        baseline = trial.user_attrs.get("baseline") is True  # the study's reference: never pruned
        history, timer = keras.callbacks.History(), EpochTimer()
        try:
            fit(
                model,
                self._train,
                self._val,
                training,
                training.epochs,
                callbacks=[
                    history,
                    timer,
                    keras.callbacks.TerminateOnNaN(),
                    EpochPruningCallback(trial, "val_accuracy", prunable=not baseline),
                    StopOnRequest(self.should_stop),
                ],
            )
        except KeyboardInterrupt as exc:
            trial.set_user_attr("fail_reason", str(exc) or "interrupted")
            raise
        finally:
            for key, value in summarize(history.history, timer.seconds).items():
                trial.set_user_attr(key, value)
            if self.on_trial_end is not None:
                failing = sys.exception()  # what training raised, if anything: it must stay seen
                try:
                    self.on_trial_end(trial, history.history)
                except Exception as exc:
                    if failing is None:
                        raise
                    failing.add_note(f"and then the trial-end hook failed: {exc!r}")

        losses = history.history.get("loss", [])
        if not losses or not math.isfinite(losses[-1]):
            reason = f"training diverged: loss became {losses[-1] if losses else 'nan'}"
            trial.set_user_attr("stop_reason", reason)
            raise optuna.TrialPruned(reason)
        return round(float(np.nanmax(history.history["val_accuracy"])), DECIMALS)
