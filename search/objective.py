"""One trial: sample L1, L2 and dropout, train the CNN, report val accuracy each epoch."""

from __future__ import annotations

import gc
import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import keras
import numpy as np
import optuna
import tensorflow as tf
from optuna_integration.keras import KerasPruningCallback
from tensorflow.python.framework.ops import gradient_registry

from search.config import PARAMS, SearchSpace, StudyConfig, Training
from search.data import Split
from search.errors import Interrupted
from search.model import build_model



def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, float]:
    """Sample each hyperparameter; a fixed one is recorded as a one-point range."""
    params = {}
    for name in PARAMS:
        p = getattr(space, name)
        low, high = p.bounds
        params[name] = trial.suggest_float(name, low, high, log=p.log and p.value is None)
    return params


def derive_seed(*entropy: int) -> int:
    """A 31-bit seed from several integers (study seed, trial number, worker index...)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0] >> 1)


def make_dataset(
    x: tf.Tensor, y: tf.Tensor, batch_size: int, shuffle: bool = False
) -> tf.data.Dataset:
    """Batches gathered from uint8 tensors by index: no float copy of the images, ever."""
    ds = tf.data.Dataset.range(int(x.shape[0]))
    if shuffle:
        ds = ds.shuffle(int(x.shape[0]), reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def seeded_model(params: dict[str, float], training: Training, seed: int) -> keras.Model:
    """A fresh session, every RNG seeded, the CNN built: a trial and its retraining start alike."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return build_model(**params, training=training)


def fit(
    model: keras.Model,
    train: tuple[tf.Tensor, tf.Tensor],
    val: tuple[tf.Tensor, tf.Tensor] | None,
    training: Training,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: int = 0,
) -> None:
    """Train on ``train``, reshuffled each epoch, validating on ``val`` (if given) after each."""
    with released_gradients():
        model.fit(
            make_dataset(*train, training.batch_size, shuffle=True),
            validation_data=None if val is None else make_dataset(*val, training.batch_size),
            epochs=epochs,
            shuffle=False,  # the dataset reshuffles itself every epoch
            callbacks=callbacks,
            verbose=verbose,
        )


@contextmanager
def released_gradients() -> Iterator[None]:
    """Unregister the gradient functions TensorFlow registers globally while tracing the steps.

    Each traced step adds a ``CustomGradient-N`` entry (tf.distribute's all_reduce) to a registry
    that is never emptied, and it keeps the step's whole graph alive: about 12 MiB per trial.
    They are only looked up while tracing, so once ``fit`` returns they can go.
    """
    registry = gradient_registry._registry
    before = set(registry)
    try:
        yield
    finally:
        for name in set(registry) - before:
            if name.startswith("CustomGradient-"):
                del registry[name]


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (training and validation)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def summarize(history: dict[str, list[float]], seconds: list[float]) -> dict[str, Any]:
    """The per-trial user attributes, from Keras' history of the epochs that ran."""
    val_acc = history.get("val_accuracy", [])
    if not val_acc:
        return {"epochs_run": 0}
    best = int(np.nanargmax(val_acc)) if not all(map(math.isnan, val_acc)) else 0
    return {
        "epochs_run": len(val_acc),
        "best_epoch": best + 1,
        "seconds_per_epoch": round(float(np.mean(seconds)), 3),
        **{
            f"{prefix}{metric}": float(history[key][-1])
            for metric in ("accuracy", "loss")
            for prefix, key in (("train_", metric), ("val_", f"val_{metric}"))
        },
    }


class StopOnRequest(keras.callbacks.Callback):
    """Ends training at the next batch once ``should_stop`` names a signal."""

    def __init__(self, should_stop: Callable[[], str | None]) -> None:
        super().__init__()
        self.should_stop = should_stop

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if signame := self.should_stop():
            raise Interrupted(f"stopped by {signame}")

    on_test_batch_end = on_train_batch_end


class Objective:
    """Trains one model per trial on a split loaded once per process."""

    def __init__(
        self,
        config: StudyConfig,
        split: Split,
        attrs: dict[str, Any] | None = None,
        on_trial_end: Callable[[optuna.Trial, dict[str, list[float]]], None] | None = None,
        should_stop: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.config = config
        self.attrs = attrs or {}
        self.on_trial_end = on_trial_end
        self.should_stop = should_stop
        self._train = tf.constant(split.x_train), tf.constant(split.y_train)
        self._val = tf.constant(split.x_val), tf.constant(split.y_val)
        # TensorFlow, Keras and the data are here for good: exempt them from the collections
        # that every trial runs (clear_session, gc_after_trial), which then take ms, not 0.2 s.
        gc.collect()
        gc.freeze()

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.config.search_space)
        seed = derive_seed(self.config.seed, trial.number)
        training = self.config.training

        model = seeded_model(params, training, seed)
        for key, value in {**self.attrs, "seed": seed, "n_params": model.count_params()}.items():
            trial.set_user_attr(key, value)

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
                    KerasPruningCallback(trial, "val_accuracy"),
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
                self.on_trial_end(trial, history.history)

        losses = history.history.get("loss", [])
        if not losses or not math.isfinite(losses[-1]):
            reason = f"training diverged: loss became {losses[-1] if losses else 'nan'}"
            trial.set_user_attr("stop_reason", reason)
            raise optuna.TrialPruned(reason)
        return float(np.nanmax(history.history["val_accuracy"]))
