"""Worker processes on one study: a shared trial budget, clean stops, one GPU or core share each."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

from search.config import StudyConfig
from search.data import Split, load_split
from search.errors import Interrupted

EXIT_INTERRUPTED = 130


class Budget:
    """Trials left for the workers of one command, shared across processes: exact, no overshoot."""

    def __init__(self, trials: int | None, context: mp.context.BaseContext = mp.get_context("spawn")):
        self._left = context.Value("q", -1 if trials is None else trials)

    def take(self) -> bool:
        with self._left.get_lock():
            if self._left.value == 0:
                return False
            if self._left.value > 0:
                self._left.value -= 1
            return True


_stop_signal: str | None = None


def stop_requested() -> str | None:
    """The name of the signal that asked this process to stop, if any."""
    return _stop_signal


def install_signal_handlers() -> None:
    """First SIGINT/SIGTERM: finish cleanly (the trial ends FAIL). Second: exit at once."""

    def first(signum: int, frame: object) -> None:
        global _stop_signal
        _stop_signal = signal.Signals(signum).name
        signal.signal(signal.SIGINT, second)
        signal.signal(signal.SIGTERM, second)

    def second(signum: int, frame: object) -> None:
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, first)
    signal.signal(signal.SIGTERM, first)


@dataclass(frozen=True)
class WorkerSpec:
    config: StudyConfig
    storage_url: str | None
    study_name: str
    data_dir: str | None
    index: int = 0
    threads: int | None = None


def run_worker(spec: WorkerSpec, budget: Budget, split: Split | None = None) -> int:
    """Run trials until the budget is spent or a stop is requested; return the exit code."""
    import optuna
    import tensorflow as tf

    from search.artifacts import TrialArtifacts
    from search.objective import Objective, derive_seed
    from search.storage import open_storage
    from search.study import make_pruner, make_sampler

    install_signal_handlers()
    if spec.threads:
        tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, spec.threads))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = spec.config
    split = split or load_split(spec.data_dir, config.data)
    storage = open_storage(spec.storage_url, config.storage)
    study = optuna.load_study(study_name=spec.study_name, storage=storage)
    # Distinct per worker, and per run: a resumed study must not replay the same points.
    sampler_seed = derive_seed(config.seed, spec.index, len(study.trials))
    study.sampler = make_sampler(config.sampler, sampler_seed)
    study.pruner = make_pruner(config.pruner, config.training.epochs)
    objective = Objective(
        config,
        split,
        attrs={"worker": spec.index, "sampler_seed": sampler_seed},
        on_trial_end=TrialArtifacts(config.storage.artifacts),
        should_stop=stop_requested,
    )
    try:
        while not stop_requested() and budget.take():
            study.optimize(objective, n_trials=1, gc_after_trial=True)
    except Interrupted:
        pass
    return EXIT_INTERRUPTED if stop_requested() else 0


def _worker_process(spec: WorkerSpec, budget: Budget) -> None:
    from search.errors import UsageError

    try:
        sys.exit(run_worker(spec, budget))
    except UsageError as exc:
        print(f"worker {spec.index}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def visible_gpus() -> list[str]:
    """GPU ids for ``CUDA_VISIBLE_DEVICES``, found without initialising TensorFlow."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def start_workers(base: WorkerSpec, workers: int, budget: Budget) -> list[mp.Process]:
    """Spawn ``workers`` processes: one GPU each if there are GPUs, else a share of the cores."""
    context = mp.get_context("spawn")
    gpus = visible_gpus()
    threads = None if gpus else max(1, (os.cpu_count() or 1) // workers)
    processes = []
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for index in range(workers):
            if gpus:  # a spawned child inherits the environment as it is at start()
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
            spec = WorkerSpec(**{**base.__dict__, "index": index, "threads": threads})
            process = context.Process(target=_worker_process, args=(spec, budget), name=f"worker-{index}")
            process.start()
            processes.append(process)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return processes
