"""``python -m bench.fleet``, run small: its JSON and table, and one line for each bad flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from bench import fleet
from search.testing import REPO


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.fleet", *args], cwd=REPO, check=False, capture_output=True,
                          text=True, timeout=300)


def test_two_workers_on_postgres_write_their_figures(postgres_url: str, tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    done = _bench("--storage", postgres_url, "--workers", "2", "--seconds", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(out.read_text())["runs"]
    assert run["workers"] == 2 and run["errors"] == 0, run
    assert run["trials"] > 0 and run["trials_per_s"] > 0 and run["p95_latency_s"] > 0
    assert run["lost"] == 0 and run["duplicated"] == 0
    assert 1 <= run["server_connections_peak"] <= 2 * 2 + 2  # each worker's pool, and the heartbeat
    assert run["memory_peak_mib"] > 0
    assert "| " + sqlalchemy.make_url(postgres_url).render_as_string() in done.stdout  # the table
    # The bench's study is gone afterwards: it leaves the database as it found it.
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM studies").scalar() == 0
    engine.dispose()


@pytest.mark.parametrize("args, says", [
    (["--workers", "0"], "workers must be 1 to 256, got 0"),
    (["--workers", "257"], "workers must be 1 to 256, got 257"),
    (["--workers", "2.5"], "not a whole number of workers: '2.5'"),
    (["--workers", "true"], "not a whole number of workers: 'true'"),
    (["--seconds", "0"], "seconds must be 1 to 600, got 0"),
    (["--seconds", "nan"], "not a whole number of seconds: 'nan'"),
    (["--storage", "sqlite:///x.db"], "a PostgreSQL URL"),
    (["--storage", "mysql://u:hunter2@h/d"], "mysql://u:***@h/d: the bench reads pg_stat_activity"),
    (["--storage", "not a url"], "is not a SQLAlchemy URL"),
    (["--json", "/no/such/folder/x.json"], "--json /no/such/folder/x.json: cannot write there"),
])
def test_bad_flags_are_one_line_and_exit_2(args: list[str], says: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        fleet.main(args)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1 and says in err, err
    assert "hunter2" not in err


def test_json_is_not_written_through_a_planted_link(tmp_path: Path, capsys) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("kept")
    (tmp_path / "fleet.json").symlink_to(target)
    with pytest.raises(SystemExit) as stop:
        fleet.main(["--json", str(tmp_path / "fleet.json")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "not a link" in err and len(err.splitlines()) == 1
    assert target.read_text() == "kept"
