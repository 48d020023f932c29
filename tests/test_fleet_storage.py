"""A fleet's storage: PgBouncer in front of PostgreSQL, the connection budget, timeouts on every
connection, faults while a trial is recorded, and TOTAL across commands.

Faults are driven by the test itself (a relay it takes down, a full filesystem, a lock it holds),
at a point the worker reaches and waits at, so nothing depends on how fast a trial runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
import yaml

from search.base.config import parse_config
from search.base.errors import UsageError
from search.interfaces.cli import main
from search.testing import REPO, Proxy, pgbouncer, played_fit, tiny_raw, unavailable
from search.tuning import objective as objective_module
from search.tuning import storage as storage_module
from search.tuning.storage import check_connection_room, open_storage
from search.tuning.study import prepare_study
from search.tuning.total import TOTAL_MAX, TrialCap, counted


def test_pgbouncer_pools_transactions_in_front_of_postgres(postgres_url: str) -> None:
    with pgbouncer(postgres_url, pool_size=2) as url:
        assert sqlalchemy.make_url(url).port != sqlalchemy.make_url(postgres_url).port
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool,
                                          connect_args={"prepare_threshold": None})
        with engine.connect() as conn:
            database, port = conn.exec_driver_sql("SELECT current_database(), inet_server_port()").one()
        engine.dispose()
        assert (database, port) == (sqlalchemy.make_url(postgres_url).database,
                                    sqlalchemy.make_url(postgres_url).port)
        console = sqlalchemy.make_url(url).set(drivername="postgresql", database="pgbouncer")
        with psycopg.connect(console.render_as_string(hide_password=False), autocommit=True,
                             prepare_threshold=None) as conn:
            settings = {row[0]: row[1] for row in conn.execute("SHOW CONFIG").fetchall()}
        assert settings["pool_mode"] == "transaction" and settings["default_pool_size"] == "2"


def test_the_storage_works_through_pgbouncer_as_directly(pgbouncer_url: str) -> None:
    storage = open_storage(pgbouncer_url)
    study = optuna.create_study(storage=storage.rdb, study_name="pooled", direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        for step in range(20):  # more than psycopg's prepare_threshold: statements repeat
            trial.report(step / 20, step)
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=8)
    with storage.rdb.engine.begin() as conn:  # the statement timeout holds in a pooled transaction
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == f"{storage_module.STATEMENT_SECONDS}s"
    storage.rdb.engine.dispose()
    trials = optuna.load_study(study_name="pooled", storage=pgbouncer_url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8
    assert all(len(t.intermediate_values) == 20 for t in trials)


def test_every_postgres_connection_has_keepalives_and_timeouts(postgres_url: str) -> None:
    storage = open_storage(postgres_url)
    with storage.rdb.engine.begin() as conn:
        timeout = conn.exec_driver_sql("SHOW statement_timeout").scalar()
        params = conn.connection.dbapi_connection.info.get_parameters()
    storage.rdb.engine.dispose()
    assert timeout == f"{storage_module.STATEMENT_SECONDS}s"
    assert params["keepalives"] == "1" and params["connect_timeout"] == str(storage_module.CONNECT_SECONDS)
    idle, interval, count = (int(params[k]) for k in ("keepalives_idle", "keepalives_interval", "keepalives_count"))
    assert idle + interval * count <= storage_module.LINK_SECONDS
    assert int(params["tcp_user_timeout"]) == storage_module.LINK_SECONDS * 1000


def test_every_mysql_connection_has_lock_and_read_timeouts(mysql_url: str) -> None:
    storage = open_storage(mysql_url)
    with storage.rdb.engine.begin() as conn:
        waits = conn.exec_driver_sql("SELECT @@innodb_lock_wait_timeout, @@lock_wait_timeout").one()
    storage.rdb.engine.dispose()
    assert tuple(waits) == (storage_module.MYSQL_LOCK_WAIT_SECONDS,) * 2
    assert storage_module.MYSQL_LOCK_WAIT_SECONDS < storage_module.LINK_SECONDS  # the server's error first


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_a_mysql_url_on_another_protocols_port_fails_in_one_line(postgres_url: str) -> None:
    server = sqlalchemy.make_url(postgres_url)  # PostgreSQL's port: it waits for the client to speak
    url = f"mysql://root@{server.host}:{server.port}/test"
    start = time.monotonic()
    result = cli("export", "--storage", url)
    assert time.monotonic() - start < storage_module.CONNECT_SECONDS + 25  # not PostgreSQL's 60 s
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        (f"error: STORAGE {url}: no MySQL server answered at {server.host}:{server.port} within "
         f"{storage_module.CONNECT_SECONDS}s (another protocol's port?)")]


@pytest.mark.parametrize("backend", ["postgres_url", "mysql_url"])
def test_workers_that_would_not_fit_in_the_servers_connections_are_refused(backend, request) -> None:
    storage = open_storage(request.getfixturevalue(backend))
    check_connection_room(storage, 4)
    with pytest.raises(UsageError) as info:
        check_connection_room(storage, 10_000)
    storage.rdb.engine.dispose()
    message = str(info.value)
    assert "10000 workers need up to 20000 connections" in message and "max_connections" in message
    assert ("PgBouncer" in message) == (backend == "postgres_url")


def test_through_pgbouncer_the_check_counts_its_clients_not_the_servers_limit(pgbouncer_url: str) -> None:
    storage = open_storage(pgbouncer_url)
    with storage.rdb.engine.connect() as conn:
        server_limit = int(conn.exec_driver_sql("SHOW max_connections").scalar())
    check_connection_room(storage, server_limit)  # 2 each: twice what the server takes, fine here
    with pytest.raises(UsageError, match=r"PgBouncer.s max_client_conn 1000, \d+ clients in use\); "
                                         r"run fewer WORKERS, or raise PgBouncer's max_client_conn"):
        check_connection_room(storage, 600)
    storage.rdb.engine.dispose()


def test_a_command_whose_workers_would_not_fit_writes_nothing(postgres_url: str, tmp_path, cifar_dir) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    setup = "from search.tuning import storage\nstorage.WORKER_CONNECTIONS = 10_000\n"
    code = f"import sys\n{setup}from search.interfaces.cli import main\nsys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "search", "--config", str(tmp_path / "study.yaml"), "--storage", postgres_url,
         "--data-dir", str(cifar_dir), "--trials", "2", "--workers", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: STORAGE") and "2 workers need up to 20000 connections" in line
    assert "put PgBouncer in transaction pooling in front of it (docs/fleet.md)" in line
    assert optuna.study.get_all_study_names(storage=postgres_url) == []


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "true", "ten", str(TOTAL_MAX + 1)])
def test_a_total_that_is_no_count_is_one_line(value: str, capsys, monkeypatch) -> None:
    for args, env in ((["search", "--total", value], {}), (["worker"], {"SEARCH_TOTAL": value})):
        with monkeypatch.context() as patch:
            for name, text in env.items():
                patch.setenv(name, text)
            with pytest.raises(SystemExit) as exited:
                main(args)
        assert exited.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert "--total" in line and value in line


def run_cli(setup: str, args: list[str], **popen) -> subprocess.Popen:
    """The CLI in a fresh process after ``setup`` (Python, with this module's names in scope)."""
    code = f"import sys\nfrom tests.test_fleet_storage import *\n{setup}\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, **popen)


def search_args(tmp_path: Path, url: str, data: Path, trials: int, *extra: str, **overrides) -> list[str]:
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50},
                   training={"epochs": 2, "batch_size": 50}, **overrides)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    return ["search", "--config", str(tmp_path / "study.yaml"), "--storage", url, "--data-dir", str(data),
            "--trials", str(trials), "--workers", "1", *extra]  # in the process, where the patches are


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url", "mysql_url", "pgbouncer_url"])
def test_commands_started_together_never_take_the_study_past_its_total(backend, request, tmp_path, cifar_dir):
    url = request.getfixturevalue(backend)
    args = search_args(tmp_path, url, cifar_dir, 5, "--total", "7")  # 2 x 5 trials asked, 7 allowed
    processes = [run_cli("objective_module.fit = played_fit([0.3, 0.4])", args) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in processes]
    for code, out, err in results:
        assert code == 0, err
    assert any("the study holds 7 search trials, its TOTAL of 7: no more are started" in out
               for _, out, _ in results)
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert sum(counted(t) for t in trials) == 7
    assert len(trials) == 8 and trials[0].user_attrs["baseline"] is True  # the baseline aside
    assert {t.state.name for t in trials} == {"COMPLETE"}
    storage = open_storage(url)
    assert not TrialCap(storage, "tiny", 7).admit(storage.load("tiny"))  # a later command starts none
    assert TrialCap(storage, "tiny", 8).admit(storage.load("tiny"))
    storage.rdb.engine.dispose()


def test_a_full_study_still_retries_a_lost_workers_trial(tmp_path, sqlite_url, stale) -> None:
    """TOTAL 2, held by a finished trial and a RUNNING one whose worker died: the next command
    fails the stale one and is admitted to run its retry (it counts as the trial it replaces)."""
    config = parse_config(tiny_raw(tmp_path, baseline=None), "tiny")
    storage = open_storage(sqlite_url, config.storage)
    study, _ = prepare_study(config, storage)
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    lost = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    stale(storage.rdb)
    cap = TrialCap(storage, "tiny", 2)
    assert cap.admit(study)
    cap.release()
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert trials[2].system_attrs["failed_trial"] == lost.number and sum(counted(t) for t in trials) == 2
    storage.rdb.engine.dispose()


# -- A storage failure while a trial is recorded: at its start, a report, or its end ----------------

POINTS = ["start", "report", "end"]


def pause(folder: str) -> None:
    """Tell the test this process reached its fault point (file ``paused``), and wait for ``go``."""
    Path(folder, "paused").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def pausing_at(point: str, folder: str) -> None:
    """In a CLI process: pause at ``point`` of its second trial's life (the first one ends well,
    so that there are values to keep): as Optuna creates it, before it reports its first epoch,
    or after its last epoch, as Optuna records its end."""
    calls = iter(range(1000))
    ask, fit = optuna.Study.ask, played_fit([0.3, 0.4])

    def paused_ask(self, *args, **kwargs):
        if point == "start" and next(calls) == 1:
            pause(folder)
        return ask(self, *args, **kwargs)

    def paused_fit(model, train, val, training, epochs, callbacks, verbose=0):
        if point in ("report", "end") and next(calls) == 1:
            history = played_fit([])(model, train, val, training, epochs, callbacks)  # noqa: F841
            if point == "report":
                pause(folder)
                return fit(model, train, val, training, epochs, callbacks)
            fit(model, train, val, training, epochs, callbacks)
            pause(folder)
            return None
        return fit(model, train, val, training, epochs, callbacks)

    optuna.Study.ask = paused_ask
    objective_module.fit = paused_fit


def await_file(path: Path, process: subprocess.Popen) -> None:
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the command ended before its fault point: {process.communicate()}")
        time.sleep(0.05)


def faulted_run(url: str, point: str, tmp_path: Path, cifar_dir: Path, fault, setup: str = "") -> tuple[str, float]:
    """A search of 3 trials, ``fault()`` done at ``point`` of its second trial: the command's one
    error line and how long after the fault it ended; checks exit 3 and no traceback. ``setup``:
    more Python for the command's process (shorter timeouts, say)."""
    folder = tmp_path / "pause"
    folder.mkdir()
    args = search_args(tmp_path, url, cifar_dir, 3, baseline=None)
    process = run_cli(f"pausing_at({point!r}, {str(folder)!r})\n{setup}", args)
    await_file(folder / "paused", process)
    fault()
    start = time.monotonic()
    (folder / "go").touch()
    out, err = process.communicate(timeout=600)
    took = time.monotonic() - start
    assert process.returncode == 3, err
    for internal in ("Traceback", "UnboundLocalError", "Should not reach", "AssertionError"):
        assert internal not in out + err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    return line, took


def later_command_retries(url: str, tmp_path: Path, cifar_dir: Path, monkeypatch, stale) -> list:
    """What a later command leaves, once the faulted worker's heartbeat is stale (set in the past,
    as a grace period passing would): every trial finished, none RUNNING."""
    from search.running.workers import Budget, WorkerSpec, run_worker

    storage = open_storage(url)
    stale(storage.rdb)
    monkeypatch.setattr(objective_module, "fit", played_fit([0.5, 0.6]))
    config = parse_config(yaml.safe_load((tmp_path / "study.yaml").read_text()), "tiny")
    assert run_worker(WorkerSpec(config, url, "tiny", str(cifar_dir)), Budget(1), storage=storage) == 0
    trials = storage.load("tiny").trials
    storage.rdb.engine.dispose()
    assert "RUNNING" not in {t.state.name for t in trials}
    return trials


def assert_recorded_values_stay(trials: list, point: str) -> None:
    assert trials[0].state.name == "COMPLETE" and trials[0].intermediate_values == {1: 0.3, 2: 0.4}
    if point == "start":
        return
    faulted = trials[1]  # failed as stale, and run again as a retry
    assert faulted.state.name == "FAIL"
    assert faulted.intermediate_values == ({1: 0.3, 2: 0.4} if point == "end" else {})
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == faulted.number]
    assert retry.state.name == "COMPLETE" and retry.params == faulted.params


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs (mounting needs root, as CI has); yields it, and fills it on demand."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        message = f"cannot mount a small filesystem: {mounted.stderr.strip()}"
        unavailable(message)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte (unbuffered: nothing is left to flush, and fail, on close)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 65536):
                pass
        except OSError:
            pass


@pytest.mark.parametrize("point", POINTS)
def test_a_full_disk_while_a_trial_is_recorded(point, small_disk, tmp_path, cifar_dir, monkeypatch, stale):
    url = f"sqlite:///{small_disk / 'optuna.db'}"
    line, _ = faulted_run(url, point, tmp_path, cifar_dir, lambda: fill(small_disk))
    assert line == f"error: STORAGE {url}: disk full, stopping (database or disk is full)"
    (small_disk / "filler").unlink()  # the disk has room again
    assert_recorded_values_stay(later_command_retries(url, tmp_path, cifar_dir, monkeypatch, stale), point)


@pytest.mark.parametrize("point", POINTS)
def test_the_server_stopping_while_a_trial_is_recorded(point, postgres_url, tmp_path, cifar_dir, monkeypatch, stale):
    server = sqlalchemy.make_url(postgres_url)
    proxy = Proxy((server.host, server.port))
    url = server.set(port=proxy.port).render_as_string(hide_password=False)
    try:
        # the default 20 s of reconnection shortened: what is told, and what stays, is the point
        # here (the defaults' own bound: tests/test_fleet_hosts.py)
        line, took = faulted_run(url, point, tmp_path, cifar_dir, proxy.down,
                                 setup="storage_module.RECONNECT_SECONDS = 5.0")
        assert line.startswith(f"error: STORAGE {url}: database unreachable for 5s, stopping (")
        assert took < storage_module.NOTICE_SECONDS + 60  # generous: the machine may be busy
        proxy.up()
        assert_recorded_values_stay(later_command_retries(url, tmp_path, cifar_dir, monkeypatch, stale), point)
    finally:
        proxy.down()


def test_a_lock_held_too_long_as_a_trial_ends(postgres_url, tmp_path, cifar_dir, monkeypatch, stale):
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as holder:
        def lock() -> None:  # the running trial's row, as a stuck transaction elsewhere would hold it
            holder.exec_driver_sql("SELECT * FROM trials WHERE state = 'RUNNING' FOR UPDATE").all()

        line, took = faulted_run(postgres_url, "end", tmp_path, cifar_dir, lock,
                                 setup="storage_module.STATEMENT_SECONDS = 5")  # not the default 20 s
        holder.rollback()
    engine.dispose()
    assert line.startswith(f"error: STORAGE {postgres_url}: a statement ran past the statement timeout "
                           "(a lock held too long?), stopping (canceling statement due to statement timeout")
    assert took < storage_module.NOTICE_SECONDS + 60
    assert_recorded_values_stay(later_command_retries(postgres_url, tmp_path, cifar_dir, monkeypatch, stale), "end")


# -- A link that goes silent: a worker in its own network namespace, its veth link cut -------------


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def other_host():
    """A network namespace joined to this one by a veth link: ``(namespace, host_ip, link)``, the
    link being this side's end, which the test takes down and up. Skips (fails in CI) where
    namespaces are not permitted."""
    tag = os.urandom(3).hex()
    namespace, link, peer = f"fs-{tag}", f"fsh{tag}", f"fsn{tag}"
    prefix, base = f"100.64.{int(tag[:2], 16)}", int(tag[2:4], 16) & 0xFC  # a random /30
    host_ip, guest_ip = f"{prefix}.{base + 1}", f"{prefix}.{base + 2}"
    try:
        ip("netns", "add", namespace)
    except (OSError, subprocess.CalledProcessError) as exc:
        message = f"network namespaces not permitted here: {getattr(exc, 'stderr', exc)}"
        unavailable(message)
    try:
        ip("link", "add", link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", namespace)
        ip("addr", "add", f"{host_ip}/30", "dev", link)
        ip("link", "set", link, "up")
        ip("-n", namespace, "addr", "add", f"{guest_ip}/30", "dev", peer)
        ip("-n", namespace, "link", "set", peer, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        yield namespace, host_ip, link
    finally:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


@pytest.mark.parametrize("cut_seconds", [None, 8])
def test_a_worker_cut_off_from_its_database(cut_seconds, other_host, postgres_url, tmp_path, cifar_dir,
                                            monkeypatch, stale):
    """None: the link stays down, the worker says so in one line and exits 3 within its bound,
    here with the link and reconnection timeouts halved and quartered (the defaults' own bound:
    tests/test_fleet_hosts.py); 8 s: the link comes back and the worker, at its defaults, carries on."""
    namespace, host_ip, link = other_host
    shorter = {"LINK_SECONDS": 10, "RECONNECT_SECONDS": 5.0} if cut_seconds is None else {}
    with pgbouncer(postgres_url, listen=host_ip) as url:  # the database host's pooler, over the link
        folder = tmp_path / "pause"
        folder.mkdir()
        args = search_args(tmp_path, url, cifar_dir, 3, baseline=None)
        setup = "".join(f"storage_module.{name} = {value!r}\n" for name, value in shorter.items())
        code = (f"import sys\nfrom tests.test_fleet_storage import *\n{setup}"
                f"pausing_at('report', {str(folder)!r})\nsys.exit(main(sys.argv[1:]))")
        process = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", code, *args],
                                   cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            await_file(folder / "paused", process)
            ip("link", "set", link, "down")  # silent: no reset, no refusal, packets lost
            start = time.monotonic()
            (folder / "go").touch()
            if cut_seconds is not None:
                time.sleep(cut_seconds)  # how long the link is down, not a wait for a result
                ip("link", "set", link, "up")
            out, err = process.communicate(timeout=600)
            took = time.monotonic() - start
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if cut_seconds is None:
            assert process.returncode == 3, err
            (line,) = [line for line in err.splitlines() if line.startswith("error:")]
            assert line.startswith(f"error: STORAGE {url}: ") and ", stopping (" in line
            assert "Traceback" not in err + out
            print(f"cut off: noticed in {took:.1f} s: {line}")
            bound = shorter["LINK_SECONDS"] + shorter["RECONNECT_SECONDS"] + 3 * storage_module.CONNECT_SECONDS
            assert took < bound + 60  # generous: the machine may be busy
            ip("link", "set", link, "up")
            assert_recorded_values_stay(later_command_retries(url, tmp_path, cifar_dir, monkeypatch, stale), "report")
        else:
            assert process.returncode == 0, err
            trials = optuna.load_study(study_name="tiny", storage=url).trials
            assert [t.state.name for t in trials] == ["COMPLETE"] * 3
            assert trials[1].intermediate_values == {1: 0.3, 2: 0.4}  # the reports after the cut
