"""``confirm``: the top trials and the baseline retrained with fresh seeds, resumable, in SQL."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note

from search.base.config import parse_config
from search.base.errors import UsageError
from search.base.seeds import derive_seed
from search.interfaces.cli import main
from search.results.confirm import confirm, confirm_seed
from search.testing import add_trials, tiny_raw
from search.tuning.compare import run_key
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study, stored_config

BASELINE = {"l1": 0.0, "l2": 2e-4, "dropout": 0.3}


@pytest.fixture
def config(tmp_path):
    # A pruner that would stop half the runs: confirmation must not use it.
    raw = tiny_raw(tmp_path, baseline=BASELINE, training={"epochs": 2, "batch_size": 50},
                   pruner={"name": "median", "n_startup_trials": 0, "n_warmup_steps": 0})
    return parse_config(raw, "tiny")


def test_confirm_runs_resumes_and_reruns_failures(config, sqlite_url, cifar_dir, capsys):
    storage = open_storage(sqlite_url, config.storage)
    study, _ = prepare_study(config, storage)
    add_trials(study, config, [0.5, 0.7, 0.6, 0.8, None])  # trial 0 is the baseline
    assert confirm(StorageOpener(sqlite_url), "tiny", top=2, seeds=2, data_dir=str(cifar_dir), runs=3) == 0
    out = capsys.readouterr().out
    assert "6 runs planned (3 configurations x 2 seeds), 0 done or under way, 6 queued now; " \
           "running 3 of the 6 waiting" in out
    assert "ran 3 confirmation runs in " in out and ": 3 complete\n" in out  # the 3 left waiting are not counted
    companion = storage.load("tiny.confirm")
    first = {t.number: t for t in companion.get_trials(states=(TrialState.COMPLETE,))}
    assert len(first) == 3
    waiting = companion.get_trials(states=(TrialState.WAITING,))
    interrupted = waiting[0]  # as a stopped worker leaves it
    rdb = storage.rdb
    trial_id = rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name("tiny.confirm"),
                                                            interrupted.number)
    rdb.set_trial_state_values(trial_id, TrialState.RUNNING)
    rdb.set_trial_state_values(trial_id, TrialState.FAIL)

    assert confirm(StorageOpener(sqlite_url), "tiny", top=2, seeds=2, workers=2, data_dir=str(cifar_dir)) == 0
    out = capsys.readouterr().out
    assert "5 done or under way, 1 queued now; running 3 of the 3 waiting" in out
    assert "ran 3 confirmation runs" in out and re.search(r"^best \(confirmed\): (the baseline|search trial)", out, re.M) and "95% CI" in out

    companion = storage.load("tiny.confirm")
    complete = companion.get_trials(states=(TrialState.COMPLETE,))
    for number, trial in first.items():  # never rerun, never overwritten
        assert companion.trials[number].value == trial.value
        assert companion.trials[number].datetime_complete == trial.datetime_complete
    keys = sorted((str(run_key(t.user_attrs)[0]), run_key(t.user_attrs)[1]) for t in complete)
    assert keys == [(s, i) for s in ("1", "3", "baseline") for i in (0, 1)]  # top 2: trials 3, 1
    assert len(companion.trials) == 7  # 6 runs and the failed one
    search_seeds = {derive_seed(config.seed, t.number) for t in study.trials}  # what a search uses
    for t in complete:
        a = t.user_attrs
        key = "baseline" if a["baseline"] else a["source_trial"]
        assert a["seed"] == confirm_seed(config.seed, key, a["seed_index"]) and a["seed"] not in search_seeds
        assert a["epochs_run"] == 2 and len(t.intermediate_values) == 2  # all epochs, not pruned
        source = study.trials[a["source_trial"]]
        assert t.params == source.params
        assert a["baseline"] == (a["source_trial"] == 0)
    assert len({t.user_attrs["seed"] for t in complete}) == 6
    assert stored_config(storage, "tiny.confirm").pruner.name == "none"
    assert companion.user_attrs["confirms"] == "tiny"
    assert "best (confirmed): " in get_note(storage.load("tiny"))

    assert confirm(StorageOpener(sqlite_url), "tiny", top=2, seeds=2, data_dir=str(cifar_dir)) == 0
    assert "6 done or under way, 0 queued now; running 0 of the 0 waiting" in capsys.readouterr().out
    assert len(storage.load("tiny.confirm").trials) == 7


def test_cli_errors(config, sqlite_url, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage(sqlite_url, config.storage)
    prepare_study(config, storage)  # the baseline queued, nothing complete
    cases = [
        (["--study", "tiny"], "study 'tiny' has no complete trial yet: nothing to confirm"),
        (["--study", "nope"], "no study named 'nope'"),
    ]
    for args, message in cases:
        assert main(["confirm", "--storage", sqlite_url, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        main(["confirm", "--storage", sqlite_url, "--study", "tiny", "--seeds", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--seeds: must be at least 1, got 0" in err
    assert optuna.get_all_study_names(sqlite_url) == ["tiny"]  # nothing half-written


def test_a_study_of_that_name_that_is_not_a_companion_is_refused(config, sqlite_url, cifar_dir, tmp_path):
    storage = open_storage(sqlite_url, config.storage)
    study, _ = prepare_study(config, storage)
    add_trials(study, config, [0.5, 0.7])
    other = parse_config(tiny_raw(tmp_path, study_name="tiny.confirm", baseline=BASELINE,
                                  training={"epochs": 2, "batch_size": 50}), "other")
    prepare_study(other, storage)  # a search someone named so, its baseline queued
    with pytest.raises(UsageError, match="does not hold the confirmations of 'tiny'"):
        confirm(StorageOpener(sqlite_url), "tiny", top=1, seeds=1, data_dir=str(cifar_dir))
