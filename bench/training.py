"""Training throughput against the tutorial's code, per-trial service overhead, and pruning."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import tensorflow as tf
from keras import layers, regularizers

from bench.common import bench_config, median_range, postgres_url
from search.base.config import StudyConfig, Training
from search.learning.data import load_split, load_train
from search.learning.training import fit, seeded_model
from search.running.workers import Budget, WorkerSpec, run_worker
from search.tuning.storage import mask, open_storage
from search.tuning.study import prepare_study

POINT = {"l1": 1e-5, "l2": 1e-3, "dropout": 0.5}  # the tutorial's L2 and dropout, a small L1


class TrainTimer(keras.callbacks.Callback):
    """Seconds of each epoch's training batches, validation excluded."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = self._end = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(self._end - self._start)


def tutorial_model(l1: float, l2: float, dropout: float) -> keras.Model:
    """The tutorial's Step 3 (float inputs in [0, 1], one-hot labels), with these penalties."""
    model = keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu", kernel_regularizer=regularizers.l1_l2(l1, l2)),
            layers.Dropout(dropout),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def forward_flops(model: keras.Model) -> int:
    """FLOPs (2 per multiply-add) of the conv and dense layers for one image; the rest is small."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, _ = layer.output.shape
            total += 2 * height * width * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def matmul_gflops(n: int, repeats: int) -> dict[str, Any]:
    """tf.linalg.matmul of two n x n float32 matrices: 2 n^3 FLOPs each."""
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
    return {"size": n, "gflops": median_range(rates, 1)}


def throughput(folder: Path, images: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Images/s of training (epoch 2; epoch 1 also traces the graphs), alternating the two codes."""
    x, y = load_train(folder)
    x, y = x[:images], y[:images]
    training = Training()
    x_float, y_onehot = x / 255.0, keras.utils.to_categorical(y, 10)  # the tutorial's Step 2
    service_data = tf.constant(x), tf.constant(y)
    runs: dict[str, list[list[float]]] = {"tutorial": [], "service": []}
    for _ in range(repeats):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model, timer = tutorial_model(**POINT), TrainTimer()
        model.fit(x_float, y_onehot, batch_size=32, epochs=2, verbose=0, callbacks=[timer])
        runs["tutorial"].append(timer.seconds)

        model, timer = seeded_model(POINT, training, seed), TrainTimer()
        fit(model, service_data, None, training, epochs=2, callbacks=[timer])
        runs["service"].append(timer.seconds)

    rate = {name: [images / s[1] for s in seconds] for name, seconds in runs.items()}
    ratios = [s / t for s, t in zip(rate["service"], rate["tutorial"])]
    flops = 3 * forward_flops(model)
    return {
        "images": images,
        "batch_size": 32,
        "tutorial_images_per_s": median_range(rate["tutorial"], 1),
        "service_images_per_s": median_range(rate["service"], 1),
        "ratio": median_range(ratios),
        "first_epoch_extra_s": median_range([s[0] - s[1] for s in runs["service"]]),
        "train_flops_per_image": flops,
        "flops_note": "3 x forward FLOPs (forward + backward), conv and dense layers",
        "service_gflops": median_range([r * flops / 1e9 for r in rate["service"]], 2),
    }


def worker_loop(config: StudyConfig, folder: Path, url: str, trials: int) -> tuple[optuna.Study, datetime]:
    """``trials`` trials through the worker loop a search runs; returns the study and its end."""
    split = load_split(folder, config.data)
    storage = open_storage(url, config.storage)
    study, _ = prepare_study(config, storage)
    run_worker(WorkerSpec(config, url, study.study_name, str(folder)), Budget(trials), split, storage)
    return study, datetime.now()


def epoch_seconds(trial: optuna.trial.FrozenTrial) -> float:
    return trial.user_attrs.get("seconds_per_epoch", 0.0) * trial.user_attrs.get("epochs_run", 0)


def overhead(folder: Path, tmp: Path, url: str, data: dict, epochs: int, trials: int) -> dict[str, Any]:
    """Per trial: from its start to the next trial's start, minus the seconds of its epochs."""
    config = bench_config(tmp, "bench-overhead", data, epochs, pruner={"name": "none"})
    study, end = worker_loop(config, folder, url, trials)
    done = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in done[1:]] + [end]
    extra = [(nxt - t.datetime_start).total_seconds() - epoch_seconds(t) for t, nxt in zip(done, starts)]
    return {"storage": mask(url), "trials": len(done), "overhead_s": median_range(extra)}


def overheads(folder: Path, tmp: Path, data: dict, epochs: int, trials: int) -> dict[str, Any]:
    """``overhead`` on SQLite and on a fresh PostgreSQL database."""
    result = {"data": data, "epochs": epochs}
    result["sqlite"] = overhead(folder, tmp, f"sqlite:///{tmp / 'overhead.db'}", data, epochs, trials)
    with postgres_url() as url:
        result["postgresql"] = (
            overhead(folder, tmp, url, data, epochs, trials) if url else {"skipped": "no server"}
        )
    return result


def pruning(folder: Path, tmp: Path, data: dict, epochs: int, trials: int) -> dict[str, Any]:
    """The same seeded search with the configured pruner and with none: epochs spent, best value."""
    result: dict[str, Any] = {"data": data, "epochs": epochs, "trials": trials}
    for label, pruner in (("configured", {}), ("none", {"pruner": {"name": "none"}})):
        config = bench_config(tmp, f"bench-pruning-{label}", data, epochs, **pruner)
        study, _ = worker_loop(config, folder, f"sqlite:///{tmp / f'pruning-{label}.db'}", trials)
        done = study.get_trials(deepcopy=False)
        result[label] = {
            "pruner": config.pruner.model_dump(),
            "epochs_spent": sum(len(t.intermediate_values) for t in done),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in done),
            "best_val_accuracy": round(study.best_value, 4),
        }
    return result
