"""Several hosts, for real: Linux network namespaces ("hosts") joined by veth links to a bridge in
this (root) namespace, where PgBouncer listens in front of a private PostgreSQL instance. Each host
runs ``python -m search search`` through the real command line on tiny synthetic data; the test
cuts one host's link mid-trial, kills another host's worker mid-trial, restarts the database, and
then reads the database itself: every trial finished, none lost, none run twice, the study total
exact, and the cut-off worker said one line.

Needs root, iproute2, PostgreSQL's server binaries and PgBouncer: without them it skips saying
which, and fails instead under ``REQUIRE_SERVICES=1``. About a minute and a half (marked ``hosts``).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from search.testing import PoolerUnavailable, pgbouncer, start_search, tiny_raw, unavailable
from search.tuning.storage import server_connect_args

pytestmark = pytest.mark.hosts

IP = shutil.which("ip") or "/usr/sbin/ip"
PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), "")
START_SECONDS = 30.0  # PostgreSQL up, or a host's first trial running
CUT_NOTICED_SECONDS = 90.0  # the storage's documented 60 s, with room for a loaded machine
FINISH_SECONDS = 240.0  # a command finishing the study's last trials
TOTAL = 4
HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 4, "max_retry": 2}


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Network:
    """Namespaces ``hosts`` on a bridge whose address ``server`` is this namespace's; ``links`` are
    the bridge ends of their veth pairs (set one down: that host's link is cut, silently)."""

    server: str
    hosts: list[str]
    links: list[str]

    def wrapper(self, host: int) -> tuple[str, ...]:
        return (IP, "netns", "exec", self.hosts[host])

    def cut(self, host: int) -> None:
        _ip("link", "set", self.links[host], "down")

    def host_of(self, pid: int) -> str | None:
        out = subprocess.run([IP, "netns", "identify", str(pid)], check=False, capture_output=True, text=True)
        return out.stdout.strip() or None


def _free_subnet() -> str:
    """A 10.251.X.0/24 that no route here uses yet (another run's, say)."""
    for offset in range(250):
        candidate = f"10.251.{(os.getpid() + offset) % 250}"
        routes = subprocess.run([IP, "-4", "route", "show", "table", "all", f"{candidate}.0/24"],
                                capture_output=True, text=True, check=True).stdout
        if not routes.strip():
            return candidate
    raise RuntimeError("no free 10.251.X.0/24 subnet")


@contextmanager
def network(count: int) -> Iterator[Network]:
    """``count`` namespaces named ``fh-<pid>-h<i>`` on a bridge ``fh<pid>b``; all deleted after."""
    tag = f"fh{os.getpid()}"
    bridge, subnet = f"{tag}b", _free_subnet()
    hosts = [f"fh-{os.getpid()}-h{i}" for i in range(count)]
    links = [f"{tag}v{i}" for i in range(count)]
    made: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        made.append(bridge)
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, (host, link) in enumerate(zip(hosts, links)):
            _ip("netns", "add", host)
            made.append(host)
            _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", host)
            _ip("link", "set", link, "master", bridge, "up")
            _ip("-n", host, "addr", "add", f"{subnet}.{i + 2}/24", "dev", "eth0")
            _ip("-n", host, "link", "set", "eth0", "up")
            _ip("-n", host, "link", "set", "lo", "up")
        yield Network(f"{subnet}.1", hosts, links)
    finally:
        # The veth pairs first: a namespace outlives its name while a cut link's sockets linger.
        for link in links:
            subprocess.run([IP, "link", "del", link], check=False, capture_output=True)
        for name in reversed(made):
            args = ("netns", "del", name) if name in hosts else ("link", "del", name)
            subprocess.run([IP, *args], check=False, capture_output=True)


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


@contextmanager
def private_postgres() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL instance of our own (initdb in a temporary folder, a free loopback port), so
    that restarting it disturbs no one; yields its URL and a function that restarts it."""
    folder = Path(tempfile.mkdtemp(prefix="fh-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data = folder / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [f"{PG_BIN}/pg_ctl", "-D", str(data), "-w", "-t", str(int(START_SECONDS))]
    started = False
    try:
        subprocess.run(_as_postgres(f"{PG_BIN}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres",
                                    "--no-sync", "-E", "UTF8"), check=True, capture_output=True)
        subprocess.run(_as_postgres(*pg_ctl, "-o", options, "-l", str(folder / "log"), "start"),
                       check=True, capture_output=True)
        started = True

        def restart() -> None:
            subprocess.run(_as_postgres(*pg_ctl, "-m", "fast", "-o", options, "-l", str(folder / "log"),
                                        "restart"), check=True, capture_output=True)

        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", restart
    finally:
        if started:  # pg_ctl stops the postmaster by the PID in its pidfile
            subprocess.run(_as_postgres(*pg_ctl, "-m", "immediate", "stop"), check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _missing() -> str | None:
    """Why the hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.access(IP, os.X_OK):
        return "iproute2's ip is not installed"
    if not PG_BIN or not os.access(f"{PG_BIN}/initdb", os.X_OK):
        return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
    probe = f"fh-{os.getpid()}-probe"
    made = subprocess.run([IP, "netns", "add", probe], check=False, capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces not permitted here ({made.stderr.strip()})"
    subprocess.run([IP, "netns", "del", probe], check=False, capture_output=True)
    return None


@pytest.fixture
def fleet() -> Iterator[tuple[Network, str, str, Callable[[], None]]]:
    """Three hosts, and PgBouncer on the bridge in front of a private PostgreSQL: (network, the
    URL the hosts use, the URL this test reads the database with, the database's restart)."""
    reason = _missing()
    if reason is None:
        try:
            with private_postgres() as (direct, restart), network(3) as net, \
                    pgbouncer(direct, listen=net.server, pool_size=4) as pooled:
                yield net, pooled, direct, restart
                return
        except PoolerUnavailable as exc:
            reason = str(exc)
    unavailable(reason)


def _running_on(storage: optuna.storages.RDBStorage, net: Network, host: int, after: int = -1,
                process: subprocess.Popen | None = None) -> FrozenTrial:
    """A trial numbered above ``after`` that a worker on ``host`` is training, polling the storage."""
    deadline = time.monotonic() + START_SECONDS * 3
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            study = optuna.load_study(study_name="fleet", storage=storage)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # not created yet
            running = []
        for trial in running:
            pid = trial.user_attrs.get("pid")
            if trial.number > after and pid and net.host_of(pid) == net.hosts[host]:
                return trial
        time.sleep(0.2)
    raise AssertionError(f"no trial seen running on {net.hosts[host]}")


def _wait_until_it_answers(url: str) -> None:
    """Until a query through ``url`` succeeds: after a restart PgBouncer refuses logins for its
    ``server_login_retry`` (15 s), which a command started meanwhile is told (exit 2)."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool,
                                      connect_args=server_connect_args("postgresql"))
    deadline = time.monotonic() + START_SECONDS
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                return
            except sqlalchemy.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        engine.dispose()


def _origin(trial: FrozenTrial) -> int:
    """The trial a retry stands for (its first attempt's number), else its own number."""
    history = RetryFailedTrialCallback.retry_history(trial)
    return history[0] if history else trial.number


def test_three_hosts_survive_a_cut_link_a_killed_worker_and_a_database_restart(
    fleet, cifar_dir: Path, tmp_path: Path
) -> None:
    net, pooled, direct, restart = fleet
    config = tiny_raw(tmp_path, study_name="fleet", data={"train_size": 100, "val_size": 50},
                      training={"epochs": 2, "batch_size": 50},
                      storage={"artifacts": str(tmp_path / "artifacts"), **HEARTBEAT})
    logs = [tmp_path / f"host{i}.err" for i in range(3)]
    folders = [tmp_path / f"host{i}" for i in range(3)]

    def launch(host: int, trials: int = TOTAL) -> subprocess.Popen:
        folders[host].mkdir(exist_ok=True)
        with logs[host].open("a") as err:
            return start_search(config, folders[host], pooled, trials, 1, cifar_dir,
                                wrapper=net.wrapper(host), extra=("--total", str(TOTAL)),
                                stdout=subprocess.DEVNULL, stderr=err)

    processes = [launch(i) for i in range(3)]
    storage = optuna.storages.RDBStorage(direct, engine_kwargs={"pool_pre_ping": True})
    try:
        cut = _running_on(storage, net, 1, process=processes[1])
        net.cut(1)  # host 1 goes silent mid-trial
        before_cut = logs[1].stat().st_size
        killed = _running_on(storage, net, 2, process=processes[2])
        os.kill(killed.user_attrs["pid"], signal.SIGKILL)  # host 2's worker dies mid-trial
        during = _running_on(storage, net, 0, after=max(cut.number, killed.number), process=processes[0])
        restart()  # the database goes away while host 0 trains, and comes back
        processes[2].wait(START_SECONDS)
        assert processes[0].wait(FINISH_SECONDS) in (0, 3)  # 3: it met the restart, said so, stopped
        # A later command (as a user would start) finishes what is left: stale trials retried.
        _wait_until_it_answers(pooled)
        # Its TRIALS counts the retries it runs too: room for all of them; TOTAL stops it.
        processes.append(launch(0, trials=3 * TOTAL))
        assert processes[1].wait(CUT_NOTICED_SECONDS) == 3
        assert processes[3].wait(FINISH_SECONDS) == 0, logs[0].read_text()
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()

    trials = optuna.load_study(study_name="fleet", storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    states = {t.number: t.state for t in trials}
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for s in states.values()), states
    by_origin: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        by_origin.setdefault(_origin(t), []).append(t)
    # None lost: every trial started ends finished, the cut-off, killed and restarted ones included
    # (a FAIL retried, its retry finished); none run twice: one finished attempt per trial.
    for origin, attempts in by_origin.items():
        done = [t for t in attempts if t.state != TrialState.FAIL]
        assert len(done) == 1, (origin, [(t.number, t.state.name) for t in attempts])
    for t in (cut, killed):
        assert states[t.number] == TrialState.FAIL and len(by_origin[_origin(t)]) > 1
    assert any(t.state == TrialState.COMPLETE for t in by_origin[_origin(during)])  # across the restart
    # The study total is exact: TOTAL search trials, besides the baseline.
    searched = [o for o, attempts in by_origin.items() if not attempts[0].user_attrs.get("baseline")]
    assert len(searched) == TOTAL, sorted(by_origin)
    said = logs[1].read_bytes()[before_cut:].decode().strip().splitlines()
    assert len(said) == 1 and said[0].startswith("error: STORAGE"), said  # the cut-off worker: one line
