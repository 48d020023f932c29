"""``python -m bench.fleet``: N worker processes on one study, without training, on PostgreSQL
directly and through PgBouncer.

Each worker is what ``python -m search worker`` is to the storage: the service's own storage handle
(``open_storage``) with the heartbeat settings, sampler and pruner of ``study_configs/cifar10.yaml``,
running ``bench.storage.objective`` (three suggestions, a dozen user attrs, 20 reports each followed
by ``should_prune``). For each N: trials per second, p95 trial latency, the server connections the
study's database holds (sampled from ``pg_stat_activity``), errors, and trials lost or run twice,
counted from the database. Workers are forked after the imports, so they share those pages.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from bench.common import REPO
from bench.storage import EPOCHS, objective
from search.base.config import load_config
from search.base.errors import SearchError, UsageError, one_line
from search.base.arguments import Parser
from search.testing import POSTGRES_ADMIN, PoolerUnavailable, pgbouncer, server_database
from search.tuning.storage import (
    STORAGE_ERRORS,
    check_connection_room,
    mask,
    open_storage,
    server_connect_args,
)
from search.tuning.study import make_pruner, make_sampler

WORKER_COUNTS = (8, 32, 128)
SECONDS = 20
MAX_WORKERS = 256
MAX_SECONDS = 600
POOL_SIZE = 20  # PgBouncer's server connections for the study's database
CONNECT_SECONDS = 300.0  # for all the workers to open their storage and meet at the start line
SAMPLE_SECONDS = 0.25  # pg_stat_activity and memory sampling period
CONFIG = load_config(REPO / "study_configs" / "cifar10.yaml")  # the sampler, pruner and heartbeats
CONTEXT = mp.get_context("fork")  # after the imports: 128 workers share those pages
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _worker(url: str, study_name: str, index: int, seconds: float, start: Any, out: Any) -> None:
    """Run trials for ``seconds`` after the start line; put (latencies, {number: reports}, errors)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    latencies: list[float] = []
    ran: dict[int, int] = {}  # trial number -> reports made
    errors: list[str] = []

    def traced(trial: optuna.Trial) -> float:
        ran[trial.number] = 0
        report = trial.report

        def counting(value: float, step: int) -> None:
            report(value, step)
            ran[trial.number] += 1

        trial.report = counting  # type: ignore[method-assign]
        return objective(trial)

    study = None
    try:
        study = open_storage(url, CONFIG.storage).load(study_name)
        study.sampler = make_sampler(CONFIG.sampler, seed=index)
        study.pruner = make_pruner(CONFIG.pruner, EPOCHS)
    except (SearchError, *STORAGE_ERRORS) as exc:
        errors.append(one_line(exc))
    try:
        start.wait(CONNECT_SECONDS)
    except threading.BrokenBarrierError:
        errors.append(f"not all workers connected within {CONNECT_SECONDS:.0f}s")
    deadline = time.monotonic() + seconds
    while study is not None and not errors and time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            study.optimize(traced, n_trials=1)
        except (SearchError, *STORAGE_ERRORS) as exc:
            errors.append(one_line(exc))
        else:
            latencies.append(time.perf_counter() - began)
    out.put((latencies, ran, errors))


def warm_up() -> None:
    """Import what the sampler and pruner import on first use, here, before the workers fork:
    beyond its startup trials, as each worker's study soon is."""
    study = optuna.create_study(direction="maximize", sampler=make_sampler(CONFIG.sampler, seed=0),
                                pruner=make_pruner(CONFIG.pruner, EPOCHS))
    study.optimize(objective, n_trials=CONFIG.sampler.n_startup_trials + 2)


def _pss_mib(pids: list[int]) -> float:
    """Proportional set size of these processes together (shared pages counted once)."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:  # ended meanwhile
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("Pss:"))
    return total / 1024


class Sampler(threading.Thread):
    """Every ``SAMPLE_SECONDS``: the server connections to the study's database (the sampler's
    own aside), and the memory of the bench's processes, until ``stop``."""

    def __init__(self, url: sqlalchemy.URL, pids: list[int]):
        super().__init__(daemon=True)
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool,
                                               connect_args=server_connect_args("postgresql"))
        self.pids = pids
        self.connections: list[int] = []
        self.active: list[int] = []
        self.memory_mib = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        query = sqlalchemy.text(
            "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            while not self.halt.wait(SAMPLE_SECONDS):
                held, active = conn.execute(query).one()
                conn.commit()
                self.connections.append(held)
                self.active.append(active)
                self.memory_mib = max(self.memory_mib, _pss_mib(self.pids))

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.engine.dispose()


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def audit(study: optuna.Study, ran: dict[int, int], claimed: int) -> dict[str, int]:
    """Trials lost or run twice, from the database: ``ran`` is what the workers finished (trial
    number -> reports made), ``claimed`` how many they finished in all (a number twice: twice)."""
    trials = study.get_trials(deepcopy=False)
    stored = {t.number: t for t in trials}
    unfinished = sum(t.state not in FINISHED for t in trials)
    missing = sum(n not in stored or stored[n].state not in FINISHED for n in ran)
    short = sum(n in stored and len(stored[n].intermediate_values) < k for n, k in ran.items())
    return {
        "lost": unfinished + missing + short,  # left unfinished, not stored, or reports missing
        "duplicated": (len(trials) - len(stored)) + (claimed - len(ran)),  # one number twice
    }


def run(url: str, workers: int, seconds: float) -> dict[str, Any]:
    """``workers`` processes on a new study in ``url``'s database for ``seconds``; the figures.

    Workers that the server (or PgBouncer) would not take are refused up front, as a search
    refuses them: ``{"workers": N, "refused": the line}``.
    """
    storage = open_storage(url, CONFIG.storage)
    try:
        check_connection_room(storage, workers)
    except UsageError as exc:
        storage.rdb.engine.dispose()
        return {"workers": workers, "refused": str(exc)}
    name = f"fleet-{workers}-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=storage.rdb, direction="maximize")
    storage.rdb.engine.dispose()  # no connection crosses the fork
    start, out = CONTEXT.Barrier(workers + 1), CONTEXT.Queue()
    warm_up()
    gc.freeze()  # the imported modules stay shared: no collection writes to their pages
    processes = [CONTEXT.Process(target=_worker, args=(url, name, i, seconds, start, out))
                 for i in range(workers)]
    for p in processes:
        p.start()
    sampler = Sampler(storage.rdb.engine.url, [os.getpid(), *(p.pid for p in processes)])
    sampler.start()
    try:
        start.wait(CONNECT_SECONDS)
    except threading.BrokenBarrierError:
        pass  # the workers say so in their errors
    began = time.perf_counter()
    results = [out.get() for _ in processes]  # before join: a full queue would block its writer
    elapsed = time.perf_counter() - began
    for p in processes:
        p.join()
    sampler.stop()
    gc.unfreeze()
    latencies = [s for lat, _, _ in results for s in lat]
    ran: dict[int, int] = {}
    for _, numbers, _ in results:
        ran.update(numbers)
    errors = [e for _, _, errs in results for e in errs]
    counts = audit(storage.load(name), ran, sum(len(numbers) for _, numbers, _ in results))
    optuna.delete_study(study_name=name, storage=storage.rdb)
    storage.rdb.engine.dispose()
    finished = len(latencies)
    return {
        "workers": workers,
        "seconds": round(elapsed, 1),
        "trials": finished,
        "trials_per_s": round(finished / elapsed, 1),
        "p95_latency_s": None if not latencies else round(_p95(latencies), 3),
        "server_connections_peak": max(sampler.connections, default=0),
        "server_connections_active_peak": max(sampler.active, default=0),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        **counts,
        "memory_peak_mib": round(sampler.memory_mib),
        "load_average_1min": round(os.getloadavg()[0], 1),  # the machine's, this bench's included
    }


def _bounded(low: int, high: int, what: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number of {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be {low} to {high}, got {value}")
        return value

    return parse


def _postgresql(url: str) -> str:
    try:
        backend = sqlalchemy.make_url(url).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise argparse.ArgumentTypeError(f"{mask(url)!r} is not a SQLAlchemy URL") from None
    if backend != "postgresql":
        raise argparse.ArgumentTypeError(
            f"{mask(url)}: the bench reads pg_stat_activity, so a PostgreSQL URL (direct or PgBouncer)")
    return url


def measure(label: str, url: str, counts: tuple[int, ...], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for workers in counts:
        print(f"  {label}, {workers} workers ...", flush=True)
        rows.append({"storage": label, **run(url, workers, seconds)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("storage", "workers", "trials/s", "p95 trial s", "server conns (active)", "errors",
            "lost", "duplicated", "memory MiB", "load")
    body = [head]
    for r in rows:
        if "refused" in r:
            body.append((r["storage"], str(r["workers"]), "refused up front", *[""] * (len(head) - 3)))
            continue
        body.append((r["storage"], str(r["workers"]), f"{r['trials_per_s']:g}", f"{r['p95_latency_s']}",
                     f"{r['server_connections_peak']} ({r['server_connections_active_peak']})",
                     str(r["errors"]), str(r["lost"]), str(r["duplicated"]), str(r["memory_peak_mib"]),
                     str(r["load_average_1min"])))
    widths = [max(len(row[i]) for row in body) for i in range(len(head))]
    body.insert(1, tuple("-" * w for w in widths))
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in body)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--storage", type=_postgresql,
                        help="a PostgreSQL URL to measure (default: a fresh database on the local "
                             "server, directly and through a PgBouncer started for it)")
    parser.add_argument("--workers", type=_bounded(1, MAX_WORKERS, "workers"),
                        help=f"worker processes (default: each of {', '.join(map(str, WORKER_COUNTS))})")
    parser.add_argument("--seconds", type=_bounded(1, MAX_SECONDS, "seconds"), default=SECONDS,
                        help=f"how long each run starts trials (default {SECONDS})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures there as JSON")
    args = parser.parse_args(argv)
    if args.json is not None and (args.json.is_symlink() or args.json.is_dir() or not (
            args.json.parent.is_dir() and os.access(args.json.parent, os.W_OK))):
        parser.error(f"--json {args.json}: cannot write there (a writable folder, not a link or a folder)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counts = (args.workers,) if args.workers else WORKER_COUNTS
    rows: list[dict[str, Any]] = []
    try:
        with ExitStack() as stack:
            if args.storage:
                rows += measure(mask(args.storage), args.storage, counts, args.seconds)
            else:
                try:
                    url = stack.enter_context(server_database(POSTGRES_ADMIN))
                except sqlalchemy.exc.OperationalError as exc:
                    raise UsageError(f"no PostgreSQL at {mask(POSTGRES_ADMIN)} ({one_line(exc)})") from None
                print(f"bench.fleet: {os.cpu_count()} CPUs, {args.seconds} s a run", flush=True)
                rows += measure("PostgreSQL", url, counts, args.seconds)
                try:
                    pooled = stack.enter_context(pgbouncer(url, pool_size=POOL_SIZE))
                except PoolerUnavailable as exc:
                    raise UsageError(str(exc)) from None
                rows += measure(f"PgBouncer (pool {POOL_SIZE})", pooled, counts, args.seconds)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except STORAGE_ERRORS as exc:  # the bench's own storage handle, between the runs
        print(f"error: storage failed: {one_line(exc.__cause__ or exc)}", file=sys.stderr)
        return 3
    result = {"cpus": os.cpu_count(), "seconds": args.seconds, "reports_per_trial": EPOCHS, "runs": rows}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
