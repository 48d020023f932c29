"""Shared fixtures: synthetic CIFAR-10 batches in the canonical format, tiny configs, servers."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

import optuna
import pytest
import sqlalchemy

from search.base.config import StudyConfig, parse_config
from search.testing import (
    MYSQL_ADMIN,
    POSTGRES_ADMIN,
    REPO,
    PoolerUnavailable,
    make_cifar_folder,
    pgbouncer,
    server_database,
    tiny_raw,
    unavailable,
)

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
    unavailable(message)


@pytest.fixture
def postgres_url():
    yield from _server_database(POSTGRES_ADMIN)


@pytest.fixture
def mysql_url():
    yield from _server_database(MYSQL_ADMIN)


# Chromium and the dashboard, for the browser tests
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; checked before the search so a skip costs nothing."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        unavailable(message)
    return CHROMIUM


@pytest.fixture
def page(chromium: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def _first_line(stream: IO[str], seconds: float) -> str:
    """The stream's first line, or "" if none comes within ``seconds`` (readline alone can hang)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=seconds)
    except queue.Empty:
        return ""


@pytest.fixture
def start_dashboard(tmp_path):
    """Starts ``dashboard`` in a subprocess: (storage URL, artifacts, *flags) -> its base URL."""
    servers = []

    def start(url: str, artifacts: Path, *flags: str) -> str:
        command = [sys.executable, "-m", "search", "dashboard", "--storage", url]
        command += ["--artifacts", str(artifacts), "--port", "0", *flags]  # it takes a free port
        log_path = tmp_path / f"dashboard-{len(servers)}.log"
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True
            )
        servers.append(server)
        mode = "WRITABLE by anyone" if "--allow-writes" in flags else "read-only;"
        banner = _first_line(server.stdout, 60)  # printed once the port is bound
        match = re.match(rf"optuna-dashboard at (http://127\.0\.0\.1:[0-9]+)/dashboard \({mode} ", banner)
        assert match and not match[1].endswith(":0"), banner or log_path.read_text()
        base = match[1]
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/studies", timeout=5)
                return base
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dashboard did not start: {log_path.read_text()}")
                time.sleep(0.3)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)


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
    unavailable(message)


def _stale(rdb: optuna.storages.RDBStorage) -> None:
    """Every RUNNING trial's heartbeat far in the past, as a dead worker's is once its grace period
    has passed (through Optuna's RDB model, the only handle on it): no test waits for that. A
    trial with no heartbeat yet gets one first."""
    from datetime import datetime

    from optuna.storages._rdb.models import TrialHeartbeatModel

    for summary in rdb.get_all_studies():
        study_id = rdb.get_study_id_from_name(summary.study_name)
        for trial in rdb.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            rdb.record_heartbeat(rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    with rdb.engine.begin() as conn:
        conn.execute(sqlalchemy.update(TrialHeartbeatModel).values(heartbeat=datetime(2000, 1, 1)))


@pytest.fixture
def stale():
    """``stale(rdb)``: the storage's RUNNING trials are stale at once (``_stale``)."""
    return _stale
