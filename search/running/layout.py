"""How many workers a search runs, and how many threads each: from cores, GPUs, memory and trials.

On a CPU, single-thread workers train more images per second in all than one worker with all
the cores (``bench.layout``: 1.17x on 2 cores, 1.03 to 1.29x over 5 runs), so ``auto`` runs one per core; on GPUs,
one per GPU. Never more workers than trials, nor than the memory available holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from search.base.config import Data

GIB = 2**30
IMAGE_BYTES = 32 * 32 * 3
# A worker's peak RSS (bench.memory): about 1.1 GiB while it reads the 50,000 training images and
# carves its split out of them, then 0.75 GiB plus about 4 copies of the split's images while it
# trains (1.3 GiB on the full 45,000 / 5,000 split).
LOAD_PEAK = int(1.15 * GIB)
TRAIN_BASE = int(0.75 * GIB)
COPIES = 4
MEMINFO, PROC_CGROUP, CGROUPS = Path("/proc/meminfo"), Path("/proc/self/cgroup"), Path("/sys/fs/cgroup")


class Plan(NamedTuple):
    workers: int
    threads: int | None  # TensorFlow threads per worker; None on GPUs (TensorFlow's default)
    reason: str

    def __str__(self) -> str:
        each = "on GPUs" if self.threads is None else f"x {_count(self.threads, 'thread')}"
        return f"layout: {_count(self.workers, 'worker')} {each} ({self.reason})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def threads_per_worker(cores: int, workers: int) -> int:
    """An equal share of the cores, one thread at least."""
    return max(1, cores // workers)


def worker_bytes(data: Data) -> int:
    """The peak memory of one worker training on the split ``data`` describes."""
    return max(LOAD_PEAK, TRAIN_BASE + COPIES * IMAGE_BYTES * (data.train_size + data.val_size))


def plan_workers(
    requested: int | None,
    trials: int | None,
    cores: int,
    gpus: int,
    mem_available_bytes: int | None,
    worker_bytes: int,
) -> Plan:
    """The layout for ``requested`` workers (None: auto) running ``trials`` trials (None: no end).

    Auto is one worker per GPU, else one single-thread worker per core. Either is capped at the
    trial count, then at the workers that fit in ``mem_available_bytes`` (None: unknown, no cap);
    one worker runs whatever the memory.
    """
    if requested is not None and requested < 1:
        raise ValueError(f"requested workers must be at least 1, got {requested}")
    if requested:
        asked, workers = f"WORKERS={requested}", requested
    else:
        asked, workers = f"auto on {_count(gpus, 'GPU') if gpus else _count(cores, 'core')}", gpus or cores
    fit = workers if mem_available_bytes is None else mem_available_bytes // worker_bytes
    each, available = f"~{_gb(worker_bytes)}", _gb(mem_available_bytes or 0)
    if trials is not None and trials < workers and trials <= fit:
        workers, reason = max(1, trials), f"{asked} capped to {max(1, trials)}: no more workers than TRIALS={trials}"
    elif fit < 1:
        capped = " capped to 1" if workers > 1 else ""
        workers, reason = 1, f"{asked}{capped}: even 1 worker of {each} may not fit in {available} available"
    elif fit < workers:
        workers, reason = fit, f"{asked} capped to {fit}: {_count(fit, 'worker')} of {each} fit in {available} available"
    elif mem_available_bytes is None:
        reason = f"{asked}; memory available unknown"
    else:
        reason = f"{asked}: {_count(workers, 'worker')} of {each} fit in {available} available"
    return Plan(workers, None if gpus else threads_per_worker(cores, workers), reason)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), if it has one."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if line.startswith("0::"):  # v2
            names, root = ("memory.max", "memory.current", "inactive_file"), CGROUPS
        elif "memory" in controllers.split(","):
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            root = CGROUPS / "memory"
        else:
            continue
        for folder in (root / path.lstrip("/"), root):  # the container's own cgroup may be the root
            limit, usage = _read_int(folder / names[0]), _read_int(folder / names[1])
            if limit is not None and usage is not None and limit < 2**60:
                return max(0, limit - usage + _stat(folder / "memory.stat", names[2]))
    return None


def _stat(path: Path, key: str) -> int:
    """A field of a ``memory.stat`` file: page cache that can be reclaimed counts as room."""
    try:
        fields = dict(line.split() for line in path.read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return int(fields.get(key, "0")) if fields.get(key, "0").isdigit() else 0


def available_memory() -> int | None:
    """Bytes that new processes may use: ``MemAvailable``, or less under a cgroup limit."""
    try:
        meminfo = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = None
    room = _cgroup_room()
    known = [n for n in (available, room) if n is not None]
    return min(known) if known else None
