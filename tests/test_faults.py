"""Faults inside a search: lost artifacts, failing trials, a full disk, a corrupt or vanished
database. Each is driven directly (a fake ``fit`` that plays epochs through the real callbacks, a
store that raises, a database capped at its size), so nothing depends on how fast a trial runs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from search.base.config import parse_config
from search.base.errors import StorageUnavailable
from search.interfaces.cli import main
from search.learning.data import load_split
from search.testing import REPO, played_fit, tiny_raw
from search.tuning import objective as objective_module
from search.tuning import storage as storage_module
from search.tuning.faults import storage_failure, told_briefly
from search.tuning.objective import Objective
from search.tuning.storage import LinkSafeArtifactStore, open_storage

FULL = OSError(errno.ENOSPC, "No space left on device")


def trials_failing(*failing: int, accuracies=(0.3, 0.4)):
    """A fit whose calls numbered ``failing`` (0 first) raise RuntimeError after their epochs."""
    calls = iter(range(1000))

    def fit(*args, **kwargs):
        n = next(calls)
        then = RuntimeError(f"kernel crashed in call {n}") if n in failing else None
        return played_fit(list(accuracies), then)(*args, **kwargs)

    return fit


@pytest.fixture
def cli_args(tmp_path, cifar_dir, sqlite_url):
    """``search`` arguments on a tiny config; returns a function of the trial count."""
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None,
                   training={"epochs": 2, "batch_size": 50})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    return lambda trials: ["search", "--config", str(tmp_path / "study.yaml"), "--storage", sqlite_url,
                           "--data-dir", str(cifar_dir), "--trials", str(trials),
                           "--workers", "1"]  # in this process, where the patches are


def patched_cli(setup: str, args: list[str]) -> subprocess.CompletedProcess:
    """The CLI in a fresh process after ``setup`` (Python, this module's names in scope): what a
    user sees, Optuna's log lines included."""
    code = f"import sys\nfrom tests.test_faults import *\n{setup}\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def load(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=url).trials


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_an_unwritable_artifact_store_leaves_trained_trials_standing(
    monkeypatch, cli_args, sqlite_url, tmp_path
):
    def full(self, artifact_id, content_body):
        raise FULL

    monkeypatch.setattr(objective_module, "fit", played_fit([0.25, 0.5]))
    monkeypatch.setattr(LinkSafeArtifactStore, "write", full)
    assert main(cli_args(2)) == 0
    trials = load(sqlite_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.value for t in trials] == [0.5, 0.5]
    assert {t.user_attrs["artifact_error"] for t in trials} == {"OSError: [Errno 28] No space left on device"}
    assert not list((tmp_path / "artifacts").iterdir())


def test_an_artifact_folder_that_cannot_be_made_is_bad_input(cli_args, tmp_path, capsys):
    raw = yaml.safe_load((tmp_path / "study.yaml").read_text())
    (tmp_path / "a-file").write_text("")
    raw["storage"]["artifacts"] = str(tmp_path / "a-file" / "artifacts")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    assert main(cli_args(1)) == 2
    assert capsys.readouterr().err == (
        f"error: storage.artifacts {tmp_path}/a-file/artifacts: cannot create (Not a directory)\n"
    )
    assert not (tmp_path / "optuna.db").exists()  # said before anything is written


def test_an_error_inside_a_trial_fails_that_trial_only(monkeypatch, cli_args, sqlite_url):
    monkeypatch.setattr(objective_module, "fit", trials_failing(0, 2))
    assert main(cli_args(4)) == 0
    trials = load(sqlite_url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: kernel crashed in call 0"
    assert trials[2].user_attrs["fail_reason"] == "RuntimeError: kernel crashed in call 2"
    assert trials[0].user_attrs["epochs_run"] == 2 and "launch" in trials[0].user_attrs
    assert "fail_reason" not in trials[1].user_attrs


def taken_over_in_call_0(*args, callbacks, **kwargs):
    """Call 0's trial is failed by someone else before its first epoch ends, as another worker
    fails a stale one while this worker stalls; the others train as usual."""
    if not hasattr(taken_over_in_call_0, "done"):
        taken_over_in_call_0.done = True
        trial = next(c._trial for c in callbacks if hasattr(c, "_trial"))
        storage = trial.storage
        study_id = storage.get_study_id_from_name(trial.study.study_name)
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                       TrialState.FAIL)
    return played_fit([0.3, 0.4])(*args, callbacks=callbacks, **kwargs)


def test_a_trial_taken_over_by_another_worker_is_one_warning_and_the_worker_goes_on(cli_args, sqlite_url):
    result = patched_cli("objective_module.fit = taken_over_in_call_0", cli_args(3))
    assert result.returncode == 0, result.stderr
    assert [t.state for t in load(sqlite_url)] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert ("warning: trial 0 was failed as stale by another worker while this one stalled past the "
            "grace period; left as it is, going on\n") in result.stderr
    assert "Traceback" not in result.stderr


def test_failures_in_a_row_stop_the_command_in_one_line(cli_args, sqlite_url):
    result = patched_cli("objective_module.fit = trials_failing(0, 2, 3, 4, 5, 6, 7, 8, 9)", cli_args(10))
    assert result.returncode == 4, result.stderr
    trials = load(sqlite_url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE] + [TrialState.FAIL] * 3
    assert error_lines(result.stderr) == [
        "error: 3 trials in a row failed, stopping (last, trial 4: RuntimeError: kernel crashed in "
        "call 4); each trial's user attr fail_reason says why"
    ]
    assert "ran 5 trials in" in result.stdout and ": 1 complete, 4 fail\n" in result.stdout
    assert "fail_reason: RuntimeError: kernel crashed in call 4" in result.stdout


def test_a_failing_artifact_upload_never_hides_the_training_error(monkeypatch, cli_args, sqlite_url):
    def full(self, artifact_id, content_body):
        raise FULL

    monkeypatch.setattr(objective_module, "fit", played_fit([0.25], then=ValueError("bad batch")))
    monkeypatch.setattr(LinkSafeArtifactStore, "write", full)
    assert main(cli_args(1)) == 0
    (trial,) = load(sqlite_url)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "ValueError: bad batch"
    assert trial.user_attrs["artifact_error"] == "OSError: [Errno 28] No space left on device"


def test_a_raising_trial_end_hook_is_a_note_on_the_training_error(monkeypatch, tmp_path, cifar_dir):
    config = parse_config(tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}), "tiny")

    def hook(trial, history):
        raise KeyError("upload")

    monkeypatch.setattr(objective_module, "fit", played_fit([0.25], then=ValueError("bad batch")))
    objective = Objective(config, load_split(cifar_dir, config.data), on_trial_end=hook)
    with pytest.raises(ValueError, match="bad batch") as info:
        objective(optuna.create_study().ask())
    assert info.value.__notes__ == ["and then the trial-end hook failed: KeyError('upload')"]


def capped(real_prepare):
    """``prepare_study``, after which the SQLite file cannot grow: a full disk."""

    def prepare(config, storage, *args):
        study, created = real_prepare(config, storage, *args)

        @sqlalchemy.event.listens_for(storage.rdb.engine, "connect")
        def cap(dbapi_connection, record):
            pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

        storage.rdb.engine.dispose()
        return study, created

    return prepare


def test_a_storage_error_that_passes_at_once_leaves_the_trial_to_be_retried(monkeypatch, tmp_path, cifar_dir,
                                                                             sqlite_url, capsys, stale):
    """A database restart inside a trial: the storage fails once, then answers again at once. The
    trial is not recorded FAIL, which no worker would retry: it stays RUNNING until its heartbeat
    is stale, and the next command runs it again."""
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    args = ["search", "--config", str(tmp_path / "study.yaml"), "--storage", sqlite_url,
            "--data-dir", str(cifar_dir), "--workers", "1", "--trials"]
    calls = iter(range(1000))

    def fit(*args, **kwargs):
        restart = optuna.exceptions.StorageInternalError("terminating connection due to administrator command")
        return played_fit([0.3, 0.4], then=restart if next(calls) == 1 else None)(*args, **kwargs)

    monkeypatch.setattr(objective_module, "fit", fit)
    assert main([*args, "3"]) == 3
    assert error_lines(capsys.readouterr().err) == [
        f"error: STORAGE {sqlite_url}: the server ended the connection, stopping "
        "(terminating connection due to administrator command)"]
    assert [t.state for t in load(sqlite_url)] == [TrialState.COMPLETE, TrialState.RUNNING]

    stale(optuna.storages.RDBStorage(sqlite_url))  # as the grace period passing would make it
    assert main([*args, "1"]) == 0
    first, lost, retry = load(sqlite_url)
    assert (first.state, lost.state, retry.state) == (TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE)
    assert retry.system_attrs["failed_trial"] == lost.number and retry.params == lost.params


def test_a_full_disk_is_told_as_such(cli_args, sqlite_url):
    setup = ("from search.running import runner\nobjective_module.fit = played_fit([0.25, 0.5])\n"
             "runner.prepare_study = capped(runner.prepare_study)")
    result = patched_cli(setup, cli_args(20))  # each trial adds rows: one soon needs a new page
    assert result.returncode == 3, result.stderr
    assert error_lines(result.stderr) == [
        f"error: STORAGE {sqlite_url}: disk full, stopping (database or disk is full)"
    ]
    assert "unreachable" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("damage", ["garbage", "pages"])
def test_a_corrupt_sqlite_file_is_one_line_and_left_as_it_is(damage, cli_args, sqlite_url, tmp_path):
    path = tmp_path / "optuna.db"
    if damage == "garbage":
        path.write_bytes(b"\x89not a database\x00" * 4000)
        reason = "file is not a database"
    else:  # a real database whose pages after the first are overwritten
        optuna.create_study(storage=sqlite_url, study_name="tiny").optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=20)
        data = path.read_bytes()
        path.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))
        reason = "database disk image is malformed"
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-m", "search", *cli_args(1)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == f"error: STORAGE {sqlite_url}: cannot open ({reason})\n"
    assert path.read_bytes() == before and not (tmp_path / "optuna.db-wal").exists()


def test_unreachable_is_said_only_after_the_reconnection_gave_up(monkeypatch, tmp_path):
    folder = tmp_path / "mounted"
    folder.mkdir()
    url = f"sqlite:///{folder / 'optuna.db'}"
    storage = open_storage(url)
    optuna.create_study(storage=storage.rdb, study_name="s")
    monkeypatch.setattr(storage_module, "RECONNECT_SECONDS", 0.0)  # give up at the first failure
    shutil.rmtree(folder)  # the file system went away
    storage.rdb.engine.dispose()
    with pytest.raises(StorageUnavailable) as info:
        storage.load("s")
    assert str(info.value) == (
        f"STORAGE {url}: database unreachable for 0s, stopping (unable to open database file)"
    )


@pytest.mark.parametrize("message, told", [
    ("database or disk is full", "disk full"),
    ("file is not a database", "the database file is corrupt"),
    ("database disk image is malformed", "the database file is corrupt"),
    ("attempt to write a readonly database", "the database is read-only"),
    ("database is locked", "the database stayed locked"),
    ("server closed the connection unexpectedly", "the server ended the connection"),
    ("could not receive data from server", "storage error"),
])
def test_storage_errors_are_told_as_what_they_are(message, told, sqlite_url):
    storage = open_storage(sqlite_url)
    driver = sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception(message))
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from driver
    except optuna.exceptions.StorageInternalError as exc:
        wrapped = exc
    for error in (driver, wrapped):
        assert str(storage_failure(storage, error)) == f"STORAGE {storage.masked}: {told}, stopping ({message})"


def test_told_briefly_leaves_the_thread_hook_and_the_log_filters_as_they_were(tiny_config, sqlite_url):
    storage = open_storage(sqlite_url, tiny_config.storage)
    logger = optuna.logging.get_logger("optuna.study._optimize")
    hook, filters = threading.excepthook, list(logger.filters)
    for _ in range(2):  # once per worker run: nothing piles up
        with pytest.raises(RuntimeError, match="left by an error"), told_briefly(storage):
            assert threading.excepthook is not hook and len(logger.filters) == len(filters) + 1
            raise RuntimeError("left by an error")
        assert threading.excepthook is hook and logger.filters == filters
