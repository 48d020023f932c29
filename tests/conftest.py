"""Shared fixtures: synthetic CIFAR-10 batches in the canonical format, tiny configs, servers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import sqlalchemy

from search.base.config import StudyConfig, parse_config
from search.testing import (
    MYSQL_ADMIN,
    POSTGRES_ADMIN,
    PoolerUnavailable,
    make_cifar_folder,
    pgbouncer,
    server_database,
    tiny_raw,
)

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"

# The command line reads SEARCH_<FLAG> (make exports them): tests never use the caller's settings.
for variable in [v for v in os.environ if v.startswith("SEARCH_") and not v.startswith("SEARCH_TEST_")]:
    del os.environ[variable]


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """A search in this process installs its Ctrl-C/SIGTERM handlers: put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 training and 100 test images in the canonical cifar-10-batches-py layout."""
    return make_cifar_folder(tmp_path_factory.mktemp("data") / "cifar-10-batches-py")


@pytest.fixture
def tiny_config(tmp_path: Path) -> StudyConfig:
    return parse_config(tiny_raw(tmp_path), "tiny")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _server_database(admin_url: str):
    """A fresh database on a local server for one test; skip (or fail in CI) if none answers."""
    try:
        with server_database(admin_url) as url:
            yield url
            return
    except sqlalchemy.exc.OperationalError as exc:
        shown = sqlalchemy.make_url(admin_url).render_as_string()
        message = f"no database server at {shown}: {str(exc.orig).strip()[:80]}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_url():
    yield from _server_database(POSTGRES_ADMIN)


@pytest.fixture
def mysql_url():
    yield from _server_database(MYSQL_ADMIN)


@pytest.fixture
def pgbouncer_url(postgres_url):
    """A fresh PostgreSQL database behind a real PgBouncer (transaction pooling); skip (or fail in
    CI) without PgBouncer."""
    try:
        with pgbouncer(postgres_url) as url:
            yield url
            return
    except PoolerUnavailable as exc:
        message = str(exc)
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)
