"""A fleet's storage: PgBouncer in front of PostgreSQL, the connection budget, timeouts on every
connection, faults while a trial is recorded, and TOTAL across commands.

Faults are driven by the test itself (a relay it takes down, a full filesystem, a lock it holds),
at a point the worker reaches and waits at, so nothing depends on how fast a trial runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
import yaml

from search.base.errors import UsageError
from search.testing import REPO, pgbouncer, tiny_raw
from search.tuning import storage as storage_module
from search.tuning.storage import check_connection_room, open_storage
from search.tuning.total import TOTAL_MAX, counted


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
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_a_mysql_url_on_another_protocols_port_fails_in_one_line(postgres_url: str) -> None:
    server = sqlalchemy.make_url(postgres_url)  # PostgreSQL's port: it waits for the client to speak
    url = f"mysql://root@{server.host}:{server.port}/test"
    start = time.monotonic()
    result = cli("export", "--storage", url)
    assert time.monotonic() - start < storage_module.CONNECT_SECONDS + 25  # not PostgreSQL's 60 s
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: STORAGE {url}: no MySQL server answered at {server.host}:{server.port} within "
        f"{storage_module.CONNECT_SECONDS}s (another protocol's port?)"]


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
        capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: STORAGE") and "2 workers need up to 20000 connections" in line
    assert "put PgBouncer in transaction pooling in front of it (docs/fleet.md)" in line
    assert optuna.study.get_all_study_names(storage=postgres_url) == []


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "true", "ten", str(TOTAL_MAX + 1)])
def test_a_total_that_is_no_count_is_one_line(value: str) -> None:
    for result in (cli("search", "--total", value), cli("worker", env={"SEARCH_TOTAL": value})):
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.splitlines()
        assert "--total" in line and value in line
