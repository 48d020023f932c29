"""Worker processes on one study: a shared trial budget, clean stops, one GPU or core share each."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from multiprocessing import forkserver
from typing import TYPE_CHECKING

from search.base.config import StudyConfig
from search.base.errors import STOP_SIGNALS, Interrupted, SearchError
from search.learning.data import Split, load_split
from search.running.layout import threads_per_worker

if TYPE_CHECKING:
    import optuna

    from search.tuning.faults import GuardedObjective
    from search.tuning.storage import StudyStorage

EXIT_INTERRUPTED = 130
CONTEXT = mp.get_context("forkserver")  # what its server loads is set as workers start (``run_workers``)
MAX_FAILURES_IN_A_ROW = 3  # failed trials, over all the workers of a command, that stop it


class _Local:
    """A counter of this process alone, as ``CONTEXT.Value`` has it: for one worker in the
    command's own process, which then holds no semaphore that a process ending at once
    (``told_briefly``) would leave to the resource tracker to report."""

    def __init__(self, typecode: str, value: int, lock: bool = True) -> None:
        self.value, self._lock = value, threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


class Budget:
    """Trials left for the workers of one command, shared across processes: exact, no overshoot;
    none once ``max_failures`` trials in a row have failed, nor once ``seconds`` have passed (as
    Optuna's ``timeout``: running trials finish)."""

    def __init__(
        self,
        trials: int | None,
        seconds: float | None = None,
        max_failures: int = MAX_FAILURES_IN_A_ROW,
        shared: bool = True,
    ):
        if trials is not None and not 0 <= trials < 2**63:  # the shared counter would wrap
            raise ValueError(f"trials must be from 0 to {2**63 - 1}, got {trials}")
        value = CONTEXT.Value if shared else _Local  # shared: for worker processes
        self._left = value("q", -1 if trials is None else trials)
        self._failures = value("q", 0)
        self._expired = value("b", 0, lock=False)
        self.max_failures = max_failures
        self.seconds = seconds
        self._deadline = None if seconds is None else time.monotonic() + seconds

    def take(self) -> bool:
        with self._left.get_lock():
            if self._left.value == 0 or self._failures.value >= self.max_failures:
                return False
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._expired.value = 1
                return False
            if self._left.value > 0:
                self._left.value -= 1
            return True

    @property
    def expired(self) -> bool:
        """Whether the time budget stopped a trial from starting."""
        return bool(self._expired.value)

    def record(self, failed: bool) -> int:
        """Count a finished trial; return how many in a row have failed now."""
        with self._failures.get_lock():
            self._failures.value = self._failures.value + 1 if failed else 0
            return self._failures.value


class Stop:
    """The signal that asked one command to stop, if any: kept on this object, which the command
    passes to what needs to know (its worker, its summary), as Optuna keeps its stop flag on the
    study; never in the module, so that nothing of one call outlives it."""

    def __init__(self) -> None:
        self.signal: str | None = None


@contextmanager
def on_signals(
    first: Callable[[int], None],
    second: Callable[[int], None],
    signals: tuple = STOP_SIGNALS,
    stop: Stop | None = None,
) -> Iterator[Stop]:
    """While inside, the first of ``signals`` is recorded on ``stop`` (a new one if None, yielded)
    and calls ``first``; later ones call ``second``. The handlers before are restored on leaving."""
    stop = Stop() if stop is None else stop
    if threading.current_thread() is not threading.main_thread():  # only the main thread may
        yield stop
        return

    def handle(signum: int, frame: object) -> None:
        if stop.signal is None:
            stop.signal = signal.Signals(signum).name
            first(signum)
        else:
            second(signum)

    saved = {s: signal.signal(s, handle) for s in signals}
    try:
        yield stop
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def clean_stop(signals: tuple = STOP_SIGNALS, stop: Stop | None = None) -> AbstractContextManager[Stop]:
    """First signal: finish the running trial as FAIL and stop. Second: exit at once."""
    return on_signals(lambda signum: None, lambda signum: os._exit(128 + signum), signals, stop)


@dataclass(frozen=True)
class WorkerSpec:
    config: StudyConfig
    storage_url: str | None
    study_name: str
    data_dir: str | None
    launch: int = 0  # this command's seed (``launch_seed``), recorded on its trials as ``launch``
    index: int = 0
    gpu: str | None = None
    threads: int | None = None
    queued_only: bool = False  # run only queued trials, stop when none is left (confirm)
    total: int | None = None  # TOTAL: the search trials the study may hold in all

    @property
    def device(self) -> str:
        """Where this worker trains, as recorded on its trials."""
        if self.gpu is not None:
            return f"GPU {self.gpu}"
        return f"CPU, {self.threads} thread{'s' * (self.threads != 1)}" if self.threads else "CPU, all cores"


def launch_seed(replay: int | None = None) -> int:
    """Fresh entropy for one command, mixed with the study seed into its workers' sampler seeds:
    commands started at the same moment (a job array, two hosts with one name) never sample the
    same points. ``replay`` (``--launch-seed``) takes a recorded one again, to reproduce a launch."""
    return secrets.randbits(32) if replay is None else replay


def run_worker(
    spec: WorkerSpec,
    budget: Budget,
    split: Split | None = None,
    storage: StudyStorage | None = None,
    stop: Stop | None = None,
) -> int:
    """Run trials until the budget is spent or ``stop`` names a signal; return the exit code.

    The in-process path (one worker) passes the split and the storage it already opened.
    """
    from search.learning.quiet import import_tensorflow

    import_tensorflow()
    import optuna
    import tensorflow as tf

    from search.base.seeds import derive_seed
    from search.tuning.artifacts import TrialArtifacts
    from search.tuning.faults import GuardedObjective, storage_failures, told_briefly
    from search.tuning.objective import Objective
    from search.tuning.storage import open_storage
    from search.tuning.study import QueuedOnlySampler, make_pruner, make_sampler
    from search.tuning.total import TrialCap

    if spec.threads:
        tf.config.threading.set_intra_op_parallelism_threads(spec.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, spec.threads))
    for gpu in tf.config.list_physical_devices("GPU"):  # workers sharing a GPU share its memory
        tf.config.experimental.set_memory_growth(gpu, True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config, stop = spec.config, Stop() if stop is None else stop
    in_process = storage is not None  # the command's own worker: its errors are the command's
    split = split or load_split(spec.data_dir, config.data)
    storage = storage or open_storage(spec.storage_url, config.storage)
    study = storage.load(spec.study_name)
    sampler_seed = derive_seed(config.seed, spec.launch, spec.index)  # distinct for every worker
    study.sampler = QueuedOnlySampler() if spec.queued_only else make_sampler(config.sampler, sampler_seed)
    study.pruner = make_pruner(config.pruner, config.training.epochs)
    objective = GuardedObjective(
        Objective(config, split, on_trial_end=TrialArtifacts(config.storage.artifacts),
                  should_stop=lambda: stop.signal),
        {"launch": spec.launch, "worker": spec.index, "sampler_seed": sampler_seed,
         "host": socket.gethostname(), "pid": os.getpid(), "device": spec.device},
        budget.record,
        None if spec.total is None else TrialCap(storage, spec.study_name, spec.total),
        queued_only=spec.queued_only,
    )
    # TensorFlow, Keras and the data are here for good: exempt them from the collections that
    # every trial runs (clear_session, gc_after_trial), which then take ms, not 0.2 s.
    gc.collect()
    gc.freeze()
    told = told_briefly(storage, prefix="" if in_process else f"worker {spec.index}: ")
    try:
        with told, storage_failures(storage):
            while not stop.signal and not (spec.queued_only and _queue_empty(study, objective)):
                if not budget.take() or not objective.run_one(study):
                    break
                objective.check(budget.max_failures)
    except Interrupted:
        pass
    return EXIT_INTERRUPTED if stop.signal else 0


def _queue_empty(study: optuna.Study, objective: GuardedObjective) -> bool:
    from optuna.trial import TrialState

    return objective.queue_empty or not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def _worker_process(spec: WorkerSpec, budget: Budget) -> None:
    """A worker in its own process: the parent passes Ctrl-C on as SIGTERM, so ignore SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.gpu is not None:  # the forkserver imported TensorFlow; its devices start here
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.gpu
    try:
        with clean_stop((signal.SIGTERM,)) as stop:
            sys.exit(run_worker(spec, budget, stop=stop))
    except SearchError as exc:
        print(f"worker {spec.index}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def visible_gpus() -> list[str]:
    """GPU ids for ``CUDA_VISIBLE_DEVICES``, found without initialising TensorFlow.

    As CUDA reads the variable, the list ends at the first entry that names no device (an index
    or a ``GPU-``/``MIG-`` UUID): ``-1`` or an empty value hides every GPU.
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        gpus = []
        for entry in os.environ["CUDA_VISIBLE_DEVICES"].split(","):
            if not (entry := entry.strip()).isdigit() and not entry.startswith(("GPU-", "MIG-")):
                break
            gpus.append(entry)
        return gpus
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def place_workers(base: WorkerSpec, workers: int, gpus: list[str], cores: int) -> list[WorkerSpec]:
    """One GPU per worker, round robin; without GPUs, an equal share of the cores each.

    Also for a single worker, so that what its trials record as their device is true.
    """
    if gpus:
        return [replace(base, index=i, gpu=gpus[i % len(gpus)]) for i in range(workers)]
    if workers == 1:  # TensorFlow's own default: all cores
        return [base]
    return [replace(base, index=i, threads=threads_per_worker(cores, workers)) for i in range(workers)]


def _start_server() -> None:
    """Start the workers' server with Ctrl-C blocked from its first instruction: a terminal sends
    Ctrl-C to the whole process group, and a server still starting would die of it (the command
    passes stops on to its workers itself). The mask is inherited; here a Ctrl-C meanwhile is
    held, not lost, until the server is spawned."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run_workers(base: WorkerSpec, workers: int, budget: Budget, stop: Stop) -> list[int]:
    """Run ``workers`` processes to the end and return their exit codes (128 + N if killed by N).

    The first SIGINT or SIGTERM is recorded on ``stop`` and passed on to them as SIGTERM (finish
    cleanly), a second as SIGKILL (exit at once).
    """
    processes: list[mp.Process] = []

    def forward(kill: bool) -> None:
        for p in processes:
            if p.exitcode is None:
                if kill:
                    p.kill()
                else:
                    p.terminate()

    # Forked from a server that has imported TensorFlow once (its runtime is not started until a
    # worker uses it): 4 workers start in about the time of one, and share those pages.
    CONTEXT.set_forkserver_preload(["search.running._preload"])
    with on_signals(lambda signum: forward(False), lambda signum: forward(True), stop=stop):
        _start_server()
        for spec in place_workers(base, workers, visible_gpus(), usable_cores()):
            if stop.signal:
                break
            process = CONTEXT.Process(
                target=_worker_process, args=(spec, budget), name=f"worker-{spec.index}"
            )
            try:
                process.start()
            except (EOFError, OSError):
                if not stop.signal:
                    raise
                break  # the server ended with the stop (a SIGTERM to the whole group, as Slurm sends)
            processes.append(process)
            if stop.signal:  # it came while this worker started (the server loads for seconds)
                forward(kill=False)
        for p in processes:
            p.join()
    return [128 - p.exitcode if p.exitcode < 0 else p.exitcode for p in processes]
