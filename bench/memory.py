"""Worker memory, each figure from a fresh process: ``python -m bench.memory MODE DATA_DIR TMP``.

``service``: a worker's peak RSS through a trial on the full split; ``tutorial``: the tutorial's
code (float64 ``x / 255.0``, one-hot labels) on the same split; both stop after ``seconds`` of
training (every buffer is allocated within the first batches). ``loop``: RSS after 5 and 30
short trials.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, bench_config, median_range, proc_status


def service(folder: Path, tmp: Path, data: dict, seconds: float) -> dict[str, Any]:
    from search.base.errors import Interrupted
    from search.learning.data import load_split
    from search.tuning.artifacts import TrialArtifacts
    from search.tuning.objective import Objective
    from search.tuning.storage import open_storage
    from search.tuning.study import prepare_study

    config = bench_config(tmp, "bench-memory", data, 20)
    split = load_split(folder, config.data)
    study, _ = prepare_study(config, open_storage(f"sqlite:///{tmp / 'memory.db'}", config.storage))
    deadline = time.monotonic() + seconds
    stop = lambda: "bench time limit" if time.monotonic() > deadline else None  # noqa: E731
    objective = Objective(config, split, on_trial_end=TrialArtifacts(config.storage.artifacts), should_stop=stop)
    try:
        study.optimize(objective, n_trials=1)
    except Interrupted:
        pass
    return {"train_images": len(split.x_train), **proc_status("VmHWM", "VmRSS")}


def tutorial(folder: Path, tmp: Path, data: dict, seconds: float) -> dict[str, Any]:
    import keras

    from bench.training import POINT, tutorial_model
    from search.learning.data import load_train, split

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.model.stop_training = time.monotonic() > deadline

    images = split(*load_train(folder), bench_config(tmp, "bench-memory", data, 1).data)
    x_train, x_val = images.x_train / 255.0, images.x_val / 255.0
    y_train, y_val = (keras.utils.to_categorical(y, 10) for y in (images.y_train, images.y_val))
    del images  # the tutorial rebinds x_train, so its uint8 copy goes
    deadline = time.monotonic() + seconds
    tutorial_model(**POINT).fit(
        x_train, y_train, batch_size=32, epochs=1, validation_data=(x_val, y_val),
        callbacks=[StopAfter()], verbose=0,
    )
    return {"train_images": len(x_train), **proc_status("VmHWM", "VmRSS")}


def loop(folder: Path, tmp: Path, data: dict, counts: tuple[int, int]) -> dict[str, Any]:
    from search.learning.data import load_split
    from search.running.workers import Budget, WorkerSpec, run_worker
    from search.tuning.storage import open_storage
    from search.tuning.study import prepare_study

    config = bench_config(tmp, "bench-loop", data, 1, pruner={"name": "none"})
    url = f"sqlite:///{tmp / 'loop.db'}"
    split = load_split(folder, config.data)
    prepare_study(config, open_storage(url, config.storage))
    spec = WorkerSpec(config, url, config.study_name, str(folder))
    rss = []
    for trials in (counts[0], counts[1] - counts[0]):
        run_worker(spec, Budget(trials), split)
        rss.append(proc_status("VmRSS")["VmRSS"])
    return {f"rss_after_{n}": value for n, value in zip(counts, rss)} | {
        "growth_pct": round(100 * (rss[1] / rss[0] - 1), 2)
    }


def _in_subprocess(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args], cwd=REPO, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.memory {args[0]} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    folder: Path, tmp: Path, data: dict, seconds: float, repeats: int, loop_data: dict,
    counts: tuple[int, int],
) -> dict[str, Any]:
    """Peak RSS of the service and of the tutorial (``repeats`` fresh processes each), and the loop."""
    peaks: dict[str, list[float]] = {"service": [], "tutorial": []}
    for _ in range(repeats):
        for mode in peaks:
            args = json.dumps([data, seconds])
            peaks[mode].append(_in_subprocess(mode, str(folder), str(tmp), args)["VmHWM"])
    return {
        "data": data or "full split (45,000 / 5,000)",
        "stopped_after_s": seconds,
        "service_peak_mib": median_range(peaks["service"], 1),
        "tutorial_peak_mib": median_range(peaks["tutorial"], 1),
        "peak_ratio": median_range([s / t for s, t in zip(peaks["service"], peaks["tutorial"])]),
        "loop": {"data": loop_data, "epochs": 1,
                 **_in_subprocess("loop", str(folder), str(tmp), json.dumps([loop_data, counts]))},
    }


if __name__ == "__main__":
    mode, folder, tmp = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "loop":
        loop_data, counts = json.loads(sys.argv[4])
        result = loop(folder, tmp, loop_data, tuple(counts))
    else:
        result = {"service": service, "tutorial": tutorial}[mode](folder, tmp, *json.loads(sys.argv[4]))
    print(json.dumps(result))
