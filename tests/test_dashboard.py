"""``dashboard`` in a real headless Chromium: the study, its trials, parameters, note and curves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import upload_artifact

from search.base.config import parse_config
from search.interfaces.cli import main
from search.interfaces.dashboard import READ_ONLY, WRONG_HOST, Guard, allowed_hosts
from search.running.runner import SearchRequest, run_search
from search.testing import REPO, SCREENSHOTS, tiny_raw
from search.tuning.storage import StorageOpener, artifact_store, open_storage


@pytest.fixture(scope="module")
def searched(
    chromium: Path, tmp_path_factory: pytest.TempPathFactory, cifar_dir: Path
) -> tuple[str, Path]:
    """A real two-trial, one-epoch search on the synthetic batches: storage URL, artifact folder."""
    tmp = tmp_path_factory.mktemp("dashboard")
    raw = tiny_raw(tmp, study_name="browser-check", training={"epochs": 1, "batch_size": 50})
    url = f"sqlite:///{tmp / 'optuna.db'}"
    run_search(SearchRequest(parse_config(raw, 'tiny'), 2, StorageOpener(url), data_dir=str(cifar_dir)))
    return url, tmp / "artifacts"


@pytest.fixture
def dashboard(searched, start_dashboard) -> str:
    """The read-only dashboard on the searched study."""
    return start_dashboard(*searched)


@pytest.fixture
def small_study(tmp_path) -> tuple[str, Path, int, int]:
    """A study with one finished trial and one artifact file, no training: URL, artifacts, ids."""
    url, artifacts = f"sqlite:///{tmp_path / 'small.db'}", tmp_path / "artifacts"
    study = optuna.create_study(study_name="odd 'name' <b>", storage=url)
    trial = study.ask({"l2": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)})
    (tmp_path / "history.json").write_text('{"val_accuracy": [0.5]}')
    upload_artifact(
        artifact_store=artifact_store(str(artifacts)),
        file_path=str(tmp_path / "history.json"),
        study_or_trial=trial,
    )
    study.tell(trial, 0.5)
    storage = open_storage(url).rdb
    study_id = storage.get_study_id_from_name(study.study_name)
    return url, artifacts, study_id, storage.get_trial_id_from_study_id_trial_number(study_id, 0)


def _request(url: str, method: str = "GET", body: object = None, host: str = "") -> tuple:
    """Status and JSON answer of one API call."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize("problem", ["missing storage", "port in use", "not a port"])
def test_cli_errors(problem, sqlite_url, tmp_path, capsys):
    open_storage(sqlite_url)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        storage, port, message = {
            "missing storage": (f"sqlite:///{tmp_path}/none.db", 8080, "no such database file"),
            "port in use": (sqlite_url, busy.getsockname()[1], "cannot serve on 127.0.0.1:"),
            "not a port": (sqlite_url, 70000, "--port: must be at most 65535, got 70000"),
        }[problem]
        args = ["--storage", storage, "--artifacts", str(tmp_path), "--port", str(port)]
        try:
            code = main(["dashboard", *args])
        except SystemExit as exc:  # a flag argparse refuses
            code = exc.code
        assert code == 2
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


def _snapshot(url: str, study_id: int) -> tuple:
    """What a write could change: study names, the study's attributes (its note), the trials."""
    storage = open_storage(url).rdb
    return (
        optuna.get_all_study_names(url),
        storage.get_study_system_attrs(study_id),
        storage.get_all_trials(study_id),
    )


def test_read_only_refuses_every_write(small_study, start_dashboard):
    url, artifacts, study_id, trial_id = small_study
    before, files = _snapshot(url, study_id), sorted(artifacts.iterdir())
    base = start_dashboard(url, artifacts)

    status, answer = _request(f"{base}/api/studies/{study_id}")
    assert status == 200 and answer["name"] == "odd 'name' <b>"
    writes = [
        ("DELETE", f"/api/studies/{study_id}", {"remove_associated_artifacts": True}),
        ("POST", f"/api/studies/{study_id}/rename", {"study_name": "renamed"}),
        ("PUT", f"/api/studies/{study_id}/note", {"version": 0, "body": "defaced"}),
        ("PUT", f"/api/studies/{study_id}/{trial_id}/note", {"version": 0, "body": "defaced"}),
        ("POST", f"/api/trials/{trial_id}/user-attrs", {"user_attrs": {"x": 1}}),
        ("POST", "/api/studies", {"study_name": "new", "directions": ["minimize"]}),
        ("POST", f"/api/artifacts/{study_id}/{trial_id}", {"file": "data:,x", "filename": "x"}),
        ("PATCH", f"/api/studies/{study_id}", {}),
    ]
    for method, path, body in writes:
        status, answer = _request(base + path, method, body)
        assert (status, answer) == (403, {"reason": READ_ONLY}), (method, path)

    assert _snapshot(url, study_id) == before
    assert sorted(artifacts.iterdir()) == files and files


def test_foreign_host_header_refused(small_study, start_dashboard):
    url, artifacts, *_ = small_study
    base = start_dashboard(url, artifacts, "--allowed-host", "dash.example.org")
    port = base.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"[::1]:{port}", "dash.example.org", "dash.example.org:443"):
        assert _request(f"{base}/api/studies", host=host)[0] == 200, host
    for host in (f"rebind.attacker.example:{port}", f"localhost:{int(port) + 1}", "localhost"):
        status, answer = _request(f"{base}/api/studies", host=host)
        assert status == 403 and "DNS rebinding" in answer["reason"], host


def test_allow_writes_deletes(small_study, start_dashboard):
    url, artifacts, study_id, _ = small_study
    base = start_dashboard(url, artifacts, "--allow-writes")
    body = {"remove_associated_artifacts": True}
    assert _request(f"{base}/api/studies/{study_id}", "DELETE", body)[0] == 204
    assert optuna.get_all_study_names(url) == []
    assert list(artifacts.iterdir()) == []


HOST_CASES = {  # bind address, --allowed-host: Host headers accepted, refused (port 8080)
    ("127.0.0.1", ()): (
        ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LocalHost:8080"],
        ["rebind.attacker.example:8080", "localhost:8081", "localhost", "", "a@localhost:8080"],
    ),
    ("0.0.0.0", ("proxy.example:8443",)): (
        [f"{socket.gethostname()}:8080", "localhost:8080", "proxy.example:8443"],
        ["rebind.attacker.example:8080", "proxy.example:8080", "proxy.example"],
    ),
    ("10.1.2.3", ()): (
        ["10.1.2.3:8080", f"{socket.gethostname()}:8080"],
        ["127.0.0.1:8080", "10.1.2.4:8080", "10.1.2.3:80"],
    ),
}


@pytest.mark.parametrize("bind, extra", HOST_CASES)
def test_host_check(bind, extra):
    """The Guard middleware passes on only requests whose Host names the bound address."""
    accepted, refused = HOST_CASES[bind, extra]
    guard = Guard(lambda environ, start: [b"ok"], allowed_hosts(bind, 8080, extra), True)
    for host in accepted + refused:
        statuses: list[str] = []
        body = guard({"HTTP_HOST": host, "REQUEST_METHOD": "GET"}, lambda s, h: statuses.append(s))
        refusal = [json.dumps({"reason": WRONG_HOST}).encode()], ["403 Forbidden"]
        assert (body, statuses) == (([b"ok"], []) if host in accepted else refusal), host


@pytest.mark.parametrize("entry", ["a b", "x:y", "::1", "evil@host", "host:99999", "host/path"])
def test_bad_allowed_host(entry, sqlite_url, tmp_path, capsys):
    open_storage(sqlite_url)
    args = ["--storage", sqlite_url, "--artifacts", str(tmp_path), "--allowed-host", entry]
    assert main(["dashboard", *args]) == 2
    assert f"--allowed-host {entry!r}: not a host name" in capsys.readouterr().err


def test_ui_delete_refused_on_read_only(small_study, start_dashboard, page):
    """The study list's delete action, confirmed with its artifacts, leaves study and files."""
    from playwright.sync_api import expect

    url, artifacts, study_id, _ = small_study
    files = sorted(artifacts.iterdir())
    page.goto(f"{start_dashboard(url, artifacts)}/dashboard")
    page.get_by_role("button", name="delete study").click()
    dialog = page.get_by_role("dialog", name="Delete study")
    dialog.get_by_label("Remove associated trial/study artifacts.").check()
    dialog.get_by_role("button", name="Yes").click()
    expect(page.get_by_text(f"Failed to delete study (id={study_id})")).to_be_visible()

    page.reload()
    expect(page.get_by_text("odd 'name' <b>")).to_be_visible()
    assert optuna.get_all_study_names(url) == ["odd 'name' <b>"]
    assert sorted(artifacts.iterdir()) == files and files


def test_a_stalled_connection_does_not_freeze_the_dashboard(small_study, start_dashboard):
    base = start_dashboard(*small_study[:2])
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as silent, \
            socket.create_connection(("127.0.0.1", port)) as halfway:
        halfway.sendall(f"GET /api/studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())  # no end
        for _ in range(3):  # while both stall, others are answered (a single-threaded server hangs)
            assert _request(f"{base}/api/studies")[0] == 200
        silent.sendall(f"GET /api/studies HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())  # late
        assert silent.recv(64).startswith(b"HTTP/1.0 200")


@pytest.mark.parametrize("path", ["/favicon.ico", "/static/bundle.js", "/dashboard"])
def test_a_request_without_accept_encoding_is_answered(small_study, start_dashboard, path):
    import http.client

    base = start_dashboard(*small_study[:2])
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    connection.putrequest("GET", path, skip_accept_encoding=True)
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 200 and answer.getheader("Content-Encoding") is None
    assert len(answer.read()) > 0
    connection.close()


@pytest.mark.parametrize("problem", ["port in use", "unresolvable host", "address not here", "bad name"])
def test_a_dashboard_that_cannot_bind_says_so_in_one_line_and_nothing_else(problem, small_study):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        host, port, message = {
            "port in use": ("127.0.0.1", busy.getsockname()[1], "(Address already in use)"),
            "unresolvable host": ("no-such-host.invalid", 0, "the host name does not resolve"),
            "address not here": ("192.0.2.1", 0, "(Cannot assign requested address)"),
            "bad name": ("a" * 64 + ".example", 0, "not a host name"),
        }[problem]
        command = [sys.executable, "-m", "search", "dashboard", "--storage", small_study[0],
                   "--artifacts", str(small_study[1]), "--host", host, "--port", str(port)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == ""  # no address printed for a server that never ran
    assert done.stderr.startswith(f"error: cannot serve on {host}:{port} ") and message in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
