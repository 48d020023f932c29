"""Workers x threads on a CPU: images/s in all of 1 process with every core, of the layout that
``--workers auto`` picks (one single-thread process per core), and of 1 process x 1 thread.

Run: ``.venv/bin/python -m bench.layout [--images N] [--seconds S] [--repeats R] [--data-dir DIR]``.
Every process trains ``search.learning.training.fit`` on the same images; once all the processes of a
layout are through epoch 1 (which also traces the graphs) they train together for ``seconds``,
and the images each trains in that time are added up, as the workers of a search train side by
side. The layouts alternate, run after run, as the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median_range

SPAWN = mp.get_context("spawn")  # fresh processes: thread pools are set before TensorFlow starts


def _train(folder: str, images: int, threads: int, seconds: float, barrier: Any, out: Any) -> None:
    """One process: epoch 1 to warm up, then ``seconds`` of training; puts its images/s."""
    import keras
    import tensorflow as tf

    from bench.training import POINT
    from search.base.config import Training
    from search.learning.data import load_train
    from search.learning.training import fit, seeded_model

    tf.config.threading.set_intra_op_parallelism_threads(threads)  # as run_worker sets them
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    x, y = load_train(Path(folder))
    data = tf.constant(x[:images]), tf.constant(y[:images])
    training = Training()

    class Window(keras.callbacks.Callback):
        """Counts the images trained from when all processes are warm until ``seconds`` later."""

        start: float | None = None
        trained = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                barrier.wait()
                self.start = time.perf_counter()

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.first = batch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.start is not None:
                self.trained += min(images, (batch + 1) * training.batch_size) - self.first * training.batch_size
                self.end = time.perf_counter()
                self.model.stop_training = self.end - self.start >= seconds

    window = Window()
    fit(seeded_model(POINT, training, 0), data, None, training, 10**6, [window])
    out.put(window.trained / (window.end - window.start))


def images_per_s(folder: Path, images: int, seconds: float, processes: int, threads: int) -> float:
    """Images trained per second in all by ``processes`` processes of ``threads`` threads."""
    barrier, out = SPAWN.Barrier(processes, timeout=600), SPAWN.Queue()
    workers = [SPAWN.Process(target=_train, args=(str(folder), images, threads, seconds, barrier, out))
               for _ in range(processes)]
    for p in workers:
        p.start()
    for p in workers:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a training process of the layout {processes} x {threads} failed")
    return sum(out.get() for _ in workers)


def run(folder: Path, images: int, seconds: float, repeats: int) -> dict[str, Any]:
    """Medians (min-max) of each layout's images/s, and the auto layout's ratio to 1 x all cores."""
    from search.running.layout import LOAD_PEAK, available_memory, plan_workers
    from search.running.workers import usable_cores

    cores = usable_cores()
    auto = plan_workers(None, None, cores, 0, available_memory(), LOAD_PEAK)  # each reads all 50,000
    layouts = {"one": (1, cores), "auto": (auto.workers, auto.threads), "single": (1, 1)}
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(repeats):
        for name, (processes, threads) in layouts.items():
            rates[name].append(images_per_s(folder, images, seconds, processes, threads))
    return {
        "images": images,
        "seconds": seconds,
        "cores": cores,
        "layouts": {name: f"{p} x {t}" for name, (p, t) in layouts.items()},
        **{f"{name}_images_per_s": median_range(r, 1) for name, r in rates.items()},
        "ratio": median_range([a / o for a, o in zip(rates["auto"], rates["one"])]),
    }


if __name__ == "__main__":
    from bench.common import synthetic_folder
    from search.learning.data import resolve_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="images per process (default 4000)")
    parser.add_argument("--seconds", type=float, default=10, help="training timed per run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each layout (default 3)")
    parser.add_argument("--data-dir", help="cifar-10-batches-py folder (default: synthetic data)")
    args = parser.parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = resolve_data_dir(args.data_dir) if args.data_dir else synthetic_folder(Path(tmp))
        result = run(folder, args.images, args.seconds, args.repeats)
    print(json.dumps(result | {"data": str(folder), "wall_s": round(time.monotonic() - start)}, indent=1))
