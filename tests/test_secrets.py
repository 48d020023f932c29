"""A storage password never shows: not on screen, in files, in the study, nor in the process list.

PostgreSQL here trusts local connections and ignores any password, so a search runs for real
with one in its URL; MariaDB refuses a wrong one, which exercises the error messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
import yaml

from search.interfaces.cli import main
from search.testing import REPO, make_cifar_folder, tiny_raw, wait_for_running
from search.tuning.storage import mask, scrub

TOKEN = "Zq9x"  # in every form of the passwords below: as typed, escaped or decoded
PASSWORD = f"p%40{TOKEN}:w/rd"  # a literal '%40', ':' and '/': each escaping level shows
FORMS = {
    "user-info, escaped": lambda url: url.replace("@", f":{quote(PASSWORD, safe='')}@", 1),
    "user-info, as typed": lambda url: url.replace("@", f":p%40{TOKEN}:w/rd@", 1),
    "query": lambda url: f"{url}?password={quote(PASSWORD, safe='')}",
}


def with_password(url: str, form: str) -> str:
    secret_url = FORMS[form](url)
    assert TOKEN in secret_url
    return secret_url


@pytest.mark.parametrize(
    "url",
    [
        *(FORMS[f]("postgresql+psycopg://u@h:5432/db") for f in FORMS),
        f"postgresql://u@h/db?sslmode=require&password={TOKEN}&password=again{TOKEN}",
        f"mysql+pymysql://root@h/db?passwd={TOKEN}&charset=utf8mb4",
        f"postgresql://u@h/db?sslpassword={TOKEN},{TOKEN}",
        f"postgresql://u:{TOKEN}@h:notaport/db",  # parses, but not as a port
        f"postgresql://u:p@{TOKEN}@h/db",  # an unescaped '@'
        f"post gres://u:{TOKEN}@h/db",  # not a URL at all
        f"postgresql:/u:{TOKEN}@h/db",
        f"host=h user=u password={TOKEN} dbname=db",
    ],
)
def test_mask_hides_every_form(url):
    shown = mask(url)
    assert TOKEN not in shown and "***" in shown


def test_mask_keeps_the_rest():
    url = f"postgresql+psycopg://u:{TOKEN}@h:5432/db?sslmode=require&password={TOKEN}"
    assert mask(url) == "postgresql+psycopg://u:***@h:5432/db?password=***&sslmode=require"
    assert mask("sqlite:////tmp/a@b/x.db") == "sqlite:////tmp/a@b/x.db"


@pytest.mark.parametrize("form", FORMS)
def test_driver_messages_that_echo_the_dsn_are_scrubbed(form):
    url = with_password("postgresql+psycopg://u@h/db", form)
    decoded = PASSWORD.replace("%40", "@") if form == "user-info, as typed" else PASSWORD
    for message in (
        f"invalid dsn: password={decoded} host=h",
        f"invalid dsn: password='{decoded}' host=h",
        f"could not connect with {quote(decoded, safe='')} or {decoded}",
    ):
        assert TOKEN not in scrub(message, url)


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("command", ["search", "export", "report", "dashboard"])
def test_refused_credentials_are_one_masked_line(command, form, mysql_url, cifar_dir, tmp_path,
                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    args = {"search": ["--config", "study.yaml", "--data-dir", str(cifar_dir)],
            "export": ["--study", "tiny"], "report": [], "dashboard": ["--artifacts", "a"]}[command]
    monkeypatch.setenv("SEARCH_STORAGE", with_password(mysql_url, form))  # root has no password
    assert main([command, *args]) == 2
    out = capsys.readouterr()
    assert one_line(out.err) and "cannot open" in out.err and "***" in out.err, out.err
    assert TOKEN not in out.out + out.err


@pytest.mark.parametrize("url", [f"postgresql+psycopg://u:{TOKEN}@127.0.0.1:1/db",
                                 f"postgresql+psycopg://u@127.0.0.1:1/db?password={TOKEN}",
                                 f"postgresql://u:p@{TOKEN}@127.0.0.1/db",
                                 f"nosuch://u:{TOKEN}@h/db", f"not a url:{TOKEN}@x"])
def test_other_bad_urls_are_masked(url, capsys):
    assert main(["report", "--storage", url]) == 2
    out = capsys.readouterr()
    assert one_line(out.err) and TOKEN not in out.out + out.err


def process_tree(root: int) -> dict[int, bytes]:
    """The command lines of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            tree[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        todo += children.get(pid, [])
    return tree


def every_command_line() -> bytes:
    lines = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(entry.read_bytes())
        except OSError:
            pass
    return b"\n".join(lines)


def test_a_search_and_all_it_writes_never_show_the_password(postgres_url, cifar_dir, tmp_path, monkeypatch,
                                                            capsys):
    """The password in the user info (escaped) for the workers, in the query for what follows:
    trust auth accepts and ignores both."""
    url = with_password(postgres_url, "user-info, escaped")
    raw = tiny_raw(tmp_path)
    raw["training"]["epochs"] = 10_000  # the workers train until stopped: none ends before the walk
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEARCH_STORAGE": url}
    process = subprocess.Popen(
        [sys.executable, "-m", "search", "search", "--config", "study.yaml", "--trials", "2",
         "--workers", "2", "--data-dir", str(cifar_dir)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        running = wait_for_running(url, "tiny", process)
        assert running is not None, process.communicate()
        tree = process_tree(process.pid)
        assert running.user_attrs["pid"] in tree  # a worker, seen while it trains
        assert len(tree) >= 3  # this command, the fork server, the workers
        assert all(TOKEN.encode() not in line for line in tree.values())
        assert TOKEN.encode() not in every_command_line()
        process.terminate()  # stopped cleanly: each worker's trial ends FAIL, then the summary
        out, err = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "storage: postgresql+psycopg://" in out and "***" in out  # the summary, masked
    assert TOKEN not in out + err
    # another study trained to the end, in this process: trial artifacts, notes and an export
    url = with_password(postgres_url, "query")
    (tmp_path / "done.yaml").write_text(yaml.safe_dump({**raw, "study_name": "tiny-done",
                                                        "training": {**raw["training"], "epochs": 1}}))
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--config", "done.yaml", "--storage", url, "--trials", "2", "--workers", "1",
                 "--data-dir", str(cifar_dir)]) == 0
    assert main(["export", "--storage", url, "--study", "tiny-done", "--top", "2"]) == 0
    assert main(["report", "--storage", url]) == 0
    monkeypatch.setattr("wsgiref.simple_server.WSGIServer.serve_forever", lambda self: None)  # bound, not serving
    assert main(["dashboard", "--storage", url, "--artifacts", str(tmp_path / "artifacts"), "--port", "0"]) == 0
    out = capsys.readouterr()
    assert "optuna-dashboard at" in out.out and TOKEN not in out.out + out.err

    rdb = optuna.storages.RDBStorage(url)
    for name in ("tiny", "tiny-done"):
        study_id = rdb.get_study_id_from_name(name)
        system = rdb.get_study_system_attrs(study_id)
        assert any("note" in key for key in system)  # the dashboard's note is there
        attrs = [rdb.get_study_user_attrs(study_id), system]
        attrs += [a for t in rdb.get_all_trials(study_id) for a in (t.user_attrs, t.system_attrs)]
        assert TOKEN not in json.dumps(attrs)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("study.yaml", "done.yaml")]
    assert {p.parent.name for p in written} >= {"tiny-done", "reports", "artifacts"}
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path


def test_make_passes_values_through_the_environment(postgres_url, tmp_path):
    """No value is echoed or reaches a shell: a password, a quote, a '$(shell ...)' stay data."""
    url = with_password(postgres_url, "user-info, escaped")
    data = make_cifar_folder(tmp_path / "it's a \"data\" dir; $(shell touch pwned) $$HOME" / "c")
    raw = tiny_raw(tmp_path)
    raw["training"]["epochs"] = 1
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    make = ["make", "--no-print-directory", "-o", ".venv/.installed", f"PY={sys.executable}", f"STORAGE={url}",
            f"CONFIG={tmp_path / 'study.yaml'}", "TRIALS=1", f"DATA_DIR={data}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*make, *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)

    injected = "x'; touch pwned; '"
    dry = run("-n", "search", f"STUDY={injected}")
    assert dry.stdout.strip().endswith(f"{sys.executable} -m search search"), dry.stdout
    assert TOKEN not in dry.stdout and "pwned" not in dry.stdout

    refused = run("search", f"STUDY={injected}")  # reaches the CLI as data, refused there
    assert refused.returncode != 0 and "study name \"x'; touch pwned; '\"" in refused.stderr

    done = run("search", "STUDY=via-make")  # the real run, through the quoted DATA_DIR
    assert done.returncode == 0, done.stderr
    assert "ran 1 trials" in done.stdout and TOKEN not in done.stdout + done.stderr
    assert optuna.load_study(study_name="via-make", storage=url).trials
    assert not list(REPO.glob("pwned")) and not list(tmp_path.rglob("pwned"))
