"""SQLite: reads never wait for a writer; a queued trial is still taken by exactly one worker;
a command that wrote leaves the database file whole. The write lock is held by the test itself."""

from __future__ import annotations

import inspect
import multiprocessing as mp
import shutil
import sqlite3
import warnings
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.base.config import StudyConfig
from search.interfaces.cli import main
from search.testing import tiny_raw
from search.tuning.storage import open_storage
from search.tuning.study import prepare_study


def path(url: str) -> Path:
    return Path(sqlalchemy.make_url(url).database)


@contextmanager
def write_lock(url: str) -> Iterator[None]:
    """Another connection holds the write lock, with a change not committed, until the block ends."""
    with closing(sqlite3.connect(path(url), isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE studies SET study_name = study_name || '-uncommitted'")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


@pytest.fixture
def study(tiny_config: StudyConfig, sqlite_url: str) -> optuna.Study:
    """The tiny study, created by this tool, with its baseline complete and one trial queued."""
    study, _ = prepare_study(tiny_config, open_storage(sqlite_url, tiny_config.storage))
    trial = study.ask({name: FloatDistribution(*p.bounds, log=p.log) for name, p in tiny_config.search_space})
    trial.set_user_attr("best_epoch", 2)
    study.tell(trial, 0.6)
    study.enqueue_trial(trial.params)
    return study


def test_every_storage_read_sees_the_last_commit_while_a_writer_holds_the_lock(study, sqlite_url):
    reader = open_storage(sqlite_url, read_only=True).rdb
    reads = [name for name in dir(optuna.storages.RDBStorage) if name.startswith("get_")]
    study_id = reader.get_study_id_from_name("tiny")
    trial_id = reader.get_trial_id_from_study_id_trial_number(study_id, 0)
    args = {"study_id": study_id, "trial_id": trial_id, "study_name": "tiny", "trial_number": 0,
            "param_name": "dropout"}
    with write_lock(sqlite_url), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # get_failed_trial_callback is deprecated
        for name in reads:
            method = getattr(reader, name)
            params = [p.name for p in inspect.signature(method).parameters.values() if p.default is p.empty]
            method(**{p: args[p] for p in params})
        loaded = optuna.load_study(study_name="tiny", storage=reader)  # through Optuna's cache
        assert [t.state for t in loaded.trials] == [TrialState.COMPLETE, TrialState.WAITING]
        assert loaded.best_value == 0.6
        assert [s.study_name for s in optuna.get_all_study_summaries(reader)] == ["tiny"]
    assert {"get_all_studies", "get_all_trials", "get_trial", "get_study_user_attrs"} <= set(reads)


def test_export_reads_while_a_writer_holds_the_lock(study, sqlite_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with write_lock(sqlite_url):
        assert main(["export", "--storage", sqlite_url, "--study", "tiny"]) == 0
    assert "wrote exports/tiny/best.yaml" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "exports" / "tiny" / "best.yaml").read_text())["value"] == 0.6


def _take_all(url: str, trial_ids: list[int], start: mp.Barrier, taken: mp.Queue) -> None:
    rdb = open_storage(url).rdb
    start.wait()
    for trial_id in trial_ids:
        if rdb.set_trial_state_values(trial_id, TrialState.RUNNING):  # what Optuna does to take one
            taken.put(trial_id)
    taken.put(None)


def test_a_queued_trial_is_taken_by_exactly_one_of_many_workers(sqlite_url, tiny_config):
    study, _ = prepare_study(tiny_config.model_copy(update={"baseline": None}), open_storage(sqlite_url))
    for i in range(30):
        study.enqueue_trial({"dropout": i / 100})
    ids = [t._trial_id for t in study.get_trials(states=(TrialState.WAITING,))]
    context = mp.get_context("spawn")
    start, taken = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_take_all, args=(sqlite_url, ids, start, taken)) for _ in range(4)]
    for w in workers:
        w.start()
    got, ended = [], 0
    while ended < len(workers):
        item = taken.get(timeout=120)
        ended += item is None
        got += [] if item is None else [item]
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * len(workers)  # no 'database is locked' either
    assert sorted(got) == sorted(ids)


def test_a_command_that_wrote_leaves_the_file_whole(sqlite_url, cifar_dir, tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path, training={"epochs": 1, "batch_size": 50})))
    open_storage(sqlite_url)  # the file, in WAL mode
    # a connection open throughout: the command's last close is then no checkpoint of its own
    with closing(sqlite3.connect(path(sqlite_url))) as watcher:
        watcher.execute("SELECT 1").fetchall()
        assert main(["search", "--config", str(config), "--storage", sqlite_url,
                     "--data-dir", str(cifar_dir), "--trials", "1"]) == 0
        wal = path(sqlite_url).with_name(path(sqlite_url).name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        copy = tmp_path / "copy.db"
        shutil.copy(path(sqlite_url), copy)  # the file alone, as `cp` would
    with closing(sqlite3.connect(copy)) as db:
        assert db.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone() == (1,)
