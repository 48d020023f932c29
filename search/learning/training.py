"""Training the CNN on uint8 tensors: seeding, the data pipeline, ``fit`` and its callbacks.

Nothing here knows Optuna: a trial (``objective``), retraining and the benchmarks all train
through these functions.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from search.base.config import Training
from search.base.errors import Interrupted
from search.base.stats import DECIMALS
from search.learning._gradients import released_gradients
from search.learning.model import build_model


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


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (training and validation)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class StopOnRequest(keras.callbacks.Callback):
    """Ends training once ``should_stop`` names a signal.

    Batch callbacks run once per call of the compiled step, so that is within 8 batches
    (``steps_per_execution`` in ``build_model``).
    """

    def __init__(self, should_stop: Callable[[], str | None]) -> None:
        super().__init__()
        self.should_stop = should_stop

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if signame := self.should_stop():
            raise Interrupted(f"stopped by {signame}")

    on_test_batch_end = on_train_batch_end


def summarize(history: dict[str, list[float]], seconds: list[float]) -> dict[str, Any]:
    """What a run of ``fit`` records, from Keras' history of the epochs that ran."""
    val_acc = history.get("val_accuracy", [])
    if not val_acc:
        return {"epochs_run": 0}
    best = int(np.nanargmax(val_acc)) if not all(map(math.isnan, val_acc)) else 0
    return {
        "epochs_run": len(val_acc),
        "best_epoch": best + 1,
        "seconds_per_epoch": round(float(np.mean(seconds)), 3),
        # the last epoch's; the trial's value is the best epoch's (``best_epoch``)
        **{
            f"last_{prefix}{metric}": round(float(history[key][-1]), DECIMALS)
            for metric in ("accuracy", "loss")
            for prefix, key in (("train_", metric), ("val_", f"val_{metric}"))
        },
    }
