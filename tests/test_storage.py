"""Storage URLs: the drivers we ship, one clear line for each bad URL, passwords never shown."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

from search.base.config import Storage
from search.interfaces.cli import main
from search.testing import tiny_raw
from search.tuning.storage import StorageOpener, mask, open_storage

SECRET = "s3cret-pw"


def run_cli(capsys, cifar_dir: Path, url: str, tmp_path: Path) -> tuple[int, str]:
    config = tmp_path / "config" / "study.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    code = main(["search", "--config", str(config), "--storage", url,
                 "--data-dir", str(cifar_dir), "--trials", "1"])
    out = capsys.readouterr()
    return code, out.out + out.err


def tables(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "is not a SQLAlchemy URL"),
        (f"nosuchdb://user:{SECRET}@127.0.0.1/db", "unknown database driver 'nosuchdb'"),
        (f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/db", "cannot open"),  # nothing listens
        ("sqlite:///:memory:", "an in-memory SQLite database is neither shared between workers nor kept"),
        ("sqlite://", "'sqlite://': an in-memory SQLite database"),
    ],
)
def test_bad_urls_get_one_masked_line_and_exit_2(url, message, capsys, cifar_dir, tmp_path):
    code, output = run_cli(capsys, cifar_dir, url, tmp_path)
    assert code == 2
    assert output.count("\n") == 1 and message in output and "Traceback" not in output
    assert SECRET not in output


def test_sqlite_in_a_missing_folder_creates_nothing(capsys, cifar_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'missing' / 'optuna.db'}"
    code, output = run_cli(capsys, cifar_dir, url, tmp_path)
    assert code == 2 and "does not exist" in output
    assert [p.name for p in tmp_path.iterdir()] == ["config"]


def test_unknown_sqlite_driver_creates_no_file(capsys, cifar_dir, tmp_path):
    code, output = run_cli(capsys, cifar_dir, f"sqlite+nosuch:///{tmp_path / 'optuna.db'}", tmp_path)
    assert code == 2 and "unknown database driver" in output
    assert [p.name for p in tmp_path.iterdir()] == ["config"]


def test_wrong_credentials_are_refused_in_one_masked_line(capsys, cifar_dir, mysql_url, tmp_path):
    url = sqlalchemy.make_url(mysql_url).set(password=SECRET).render_as_string(hide_password=False)
    code, output = run_cli(capsys, cifar_dir, url, tmp_path)
    assert code == 2 and "cannot open" in output and "Access denied" in output
    assert SECRET not in output and "***" in output
    assert tables(mysql_url) == []  # nothing created


@pytest.mark.parametrize("command", ["export", "report", "worker"])
def test_read_only_commands_create_nothing_on_an_empty_server(command, capsys, postgres_url):
    assert main([command, "--storage", postgres_url, "--study", "any"]) == 2
    assert "holds no studies (run a search first)" in capsys.readouterr().err
    assert tables(postgres_url) == []


def test_plain_postgresql_url_uses_psycopg3(postgres_url):
    storage = open_storage(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    assert storage.rdb.engine.dialect.driver == "psycopg"
    optuna.create_study(study_name="s", storage=storage.rdb)
    assert "studies" in tables(postgres_url)


@pytest.mark.parametrize("scheme", ["mysql://", "mariadb://"])
def test_plain_mysql_and_mariadb_urls_use_pymysql(scheme, mysql_url):
    storage = open_storage(mysql_url.replace("mysql+pymysql://", scheme))
    assert storage.rdb.engine.dialect.driver == "pymysql"
    optuna.create_study(study_name="s", storage=storage.rdb)
    assert "studies" in tables(mysql_url)


def test_sqlite_waits_for_locks_and_uses_wal(sqlite_url):
    storage = open_storage(sqlite_url)
    with storage.rdb.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000


def assert_heartbeat(storage, interval: int, grace: int, retries: int) -> None:
    assert storage.rdb.get_heartbeat_interval() == interval and storage.rdb.grace_period == grace
    callback = storage.rdb.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert callback._max_retry == retries


def test_heartbeats_and_retries_come_from_the_config(sqlite_url):
    settings = Storage(heartbeat_interval=7, grace_period=23, max_retry=5)  # none of them defaults
    assert_heartbeat(open_storage(sqlite_url, settings), 7, 23, 5)


def test_a_command_opens_its_storage_once_and_takes_the_studys_heartbeat_on_it(sqlite_url):
    open_storage(sqlite_url)  # a storage with its tables, as a study's
    opener = StorageOpener(sqlite_url)
    assert not opener.opened
    first = opener.open(read_only=True)  # picking the study, reading its config
    again = opener.open(Storage(heartbeat_interval=7, grace_period=23, max_retry=5))  # running its trials
    assert again is first and opener.opened
    assert_heartbeat(again, 7, 23, 5)


def test_mask_hides_passwords_even_in_unparsable_urls():
    assert mask(f"postgresql://u:{SECRET}@h/db") == "postgresql://u:***@h/db"
    assert SECRET not in mask(f"postgresql://u:{SECRET}@h:notaport/db")
    assert mask("sqlite:///x.db") == "sqlite:///x.db"
