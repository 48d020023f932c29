"""``dashboard`` in a real headless Chromium: the study, its trials, parameters, note and curves."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from search.config import parse_config
from search.cli import main
from search.runner import run_search
from search.storage import open_storage
from tests.conftest import REPO, REQUIRE_SERVICES, tiny_raw

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; checked before the search so a skip costs nothing."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def searched(
    chromium: Path, tmp_path_factory: pytest.TempPathFactory, cifar_dir: Path
) -> tuple[str, Path]:
    """A real two-trial, one-epoch search on the synthetic batches: storage URL, artifact folder."""
    tmp = tmp_path_factory.mktemp("dashboard")
    raw = tiny_raw(tmp, study_name="browser-check", training={"epochs": 1, "batch_size": 50})
    url = f"sqlite:///{tmp / 'optuna.db'}"
    run_search(parse_config(raw, "tiny"), 2, storage_url=url, data_dir=str(cifar_dir))
    return url, tmp / "artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(searched, tmp_path):
    """The ``dashboard`` command in a subprocess; its base URL once it answers."""
    url, artifacts = searched
    port = _free_port()
    command = [sys.executable, "-m", "search", "dashboard", "--storage", url]
    command += ["--artifacts", str(artifacts), "--port", str(port)]
    with open(tmp_path / "dashboard.log", "w") as log:
        server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert server.stdout.readline().startswith(f"optuna-dashboard at {base}/dashboard ")
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/studies", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (tmp_path / "dashboard.log").read_text()
                    pytest.fail(f"dashboard did not start: {log}")
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def page(chromium: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


@pytest.mark.parametrize("problem", ["missing storage", "port in use", "not a port"])
def test_cli_errors(problem, sqlite_url, tmp_path, capsys):
    open_storage(sqlite_url)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        storage, port, message = {
            "missing storage": (f"sqlite:///{tmp_path}/none.db", 8080, "no such database file"),
            "port in use": (sqlite_url, busy.getsockname()[1], "cannot serve on 127.0.0.1:"),
            "not a port": (sqlite_url, 70000, "PORT 70000: not a TCP port"),
        }[problem]
        args = ["--storage", storage, "--artifacts", str(tmp_path), "--port", str(port)]
        assert main(["dashboard", *args]) == 2
    assert message in capsys.readouterr().err


def test_dashboard_shows_study_trials_and_curves(searched, dashboard, page):
    from playwright.sync_api import expect

    study = optuna.load_study(study_name="browser-check", storage=searched[0])
    best = study.best_trial
    SCREENSHOTS.mkdir(exist_ok=True)

    page.goto(f"{dashboard}/dashboard")
    page.get_by_text("browser-check").click()
    expect(page.get_by_text("Best Trial")).to_be_visible()
    study_curves = page.locator('[id="user-defined-plot:validation-curves"]')  # saved by trials
    expect(study_curves).to_contain_text("Validation accuracy per epoch")
    study_page = page.url  # .../dashboard/studies/<id>

    page.goto(f"{study_page}/note")
    expect(page.get_by_text("Data split: 400 training / 100 validation images")).to_be_visible()

    page.goto(f"{study_page}/trials?numbers={best.number}")
    expect(page.get_by_text("2 Trials")).to_be_visible()
    expect(page.get_by_text(f"Trial {best.number} (trial_id=")).to_be_visible()
    for name, value in best.params.items():
        expect(page.get_by_text(f"{name} {value}", exact=True)).to_be_visible()
    expect(page.get_by_text("learning_curves.png")).to_be_visible()
    expect(page.locator('img[alt="learning_curves.png"]')).to_have_count(1)  # a thumbnail
    curves = page.locator(f'img[alt="learning curves of trial {best.number}"]')  # its note
    curves.scroll_into_view_if_needed()
    loaded = "img => img.complete && img.naturalWidth > 0"  # the PNG came from the store
    page.wait_for_function(loaded, arg=curves.element_handle())
    assert curves.bounding_box()["width"] > 900  # readable, unlike the 200-pixel card
    page.screenshot(path=str(SCREENSHOTS / "dashboard-trial.png"), full_page=True)
