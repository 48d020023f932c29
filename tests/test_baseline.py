"""The baseline: queued once as a study's first trial, trained at its effective values, reported."""

from __future__ import annotations

import subprocess

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note

from search.base.config import parse_config, shown_params
from search.learning.data import load_split
from search.running.runner import SearchRequest, run_search
from search.testing import start_search, tiny_raw
from search.tuning.objective import Objective
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study

POINT = {"l1": 0.0, "l2": 2e-4, "dropout": 0.3}  # not the default: ignoring it fails


def marked(url: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)
    return [t for t in trials if t.user_attrs.get("baseline") is True]


def test_a_new_study_queues_its_baseline_once_and_a_resumed_one_not_again(tmp_path, sqlite_url):
    config = parse_config(tiny_raw(tmp_path, baseline=POINT), "tiny")
    storage = open_storage(sqlite_url)
    study, created = prepare_study(config, storage)
    assert created
    (trial,) = study.trials
    assert trial.state == TrialState.WAITING and trial.user_attrs == {"baseline": True}
    assert trial.system_attrs["fixed_params"] == {"l1_on": False, "l2_on": True, "l2": 2e-4, "dropout": 0.3}
    for _ in range(2):
        assert prepare_study(config, storage)[1] is False
    assert len(storage.load("tiny").trials) == 1


def test_no_baseline_queues_nothing(tmp_path, sqlite_url):
    config = parse_config(tiny_raw(tmp_path, baseline=None), "tiny")
    assert prepare_study(config, open_storage(sqlite_url))[0].trials == []


def test_the_baseline_trains_at_its_effective_values_and_is_reported(tmp_path, cifar_dir, sqlite_url, capsys):
    raw = tiny_raw(tmp_path, baseline=POINT, training={"epochs": 1, "batch_size": 50})
    config = parse_config(raw, "tiny")
    assert run_search(SearchRequest(config, 2, StorageOpener(sqlite_url), data_dir=str(cifar_dir))) == 0
    out = capsys.readouterr().out
    assert "ran 2 trials in " in out and ": 2 complete\n" in out  # the baseline is one of them
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    base, other = study.trials
    assert base.user_attrs["baseline"] is True and "baseline" not in other.user_attrs
    assert "l1" not in base.params and base.params["l1_on"] is False  # stored as off
    assert base.user_attrs["effective_params"] == POINT
    assert other.user_attrs["effective_params"] == config.search_space.effective(other.params)
    line = f"baseline: trial 0 (baseline), val_accuracy {base.value:.4f} (l1 off, l2 0.0002, dropout 0.3)\n"
    assert line in out
    best = study.best_trial
    if best.number == 1:
        assert (f"best by search (one run each, unconfirmed): trial 1, val_accuracy {best.value:.4f} "
                f"({shown_params(best)}); {best.value - base.value:+.4f} over the baseline") in out
    else:
        assert "best by search (one run each, unconfirmed): the baseline, no trial beats it" in out
    note = get_note(study)
    assert "**Baseline**: l1 0, l2 0.0002, dropout 0.3, the first trial" in note and line.strip() in note

    assert run_search(SearchRequest(config, 1, StorageOpener(sqlite_url), data_dir=str(cifar_dir))) == 0
    assert [t.number for t in marked(sqlite_url)] == [0]  # a resumed study queues no second one


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_launches_starting_together_queue_one_baseline(backend, request, tmp_path, cifar_dir):
    url = request.getfixturevalue(backend)
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=POINT,
                   training={"epochs": 1, "batch_size": 50})
    # The tables first: launches creating them at once on a fresh database race each other
    # (UNIQUE constraint failed: alembic_version), which is not what this test is about.
    open_storage(url)
    launches = []
    for i in range(3):
        folder = tmp_path / f"launch{i}"
        folder.mkdir()
        launches.append(start_search(raw, folder, url, 1, 1 + i % 2, cifar_dir, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0, 0], outputs
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials), outputs
    (base,) = marked(url)
    assert base.number == 0 and base.user_attrs["effective_params"] == POINT


class PruneAlways(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_the_baseline_is_never_pruned_but_reports_every_epoch(tmp_path, cifar_dir):
    config = parse_config(tiny_raw(tmp_path, training={"epochs": 3, "batch_size": 50}), "tiny")
    study = optuna.create_study(direction="maximize", pruner=PruneAlways())
    study.enqueue_trial(config.search_space.trial_params(POINT), user_attrs={"baseline": True})
    study.enqueue_trial(config.search_space.trial_params(POINT), user_attrs={"baseline": "yes"})  # not True
    study.optimize(Objective(config, load_split(cifar_dir, config.data)), n_trials=2)
    base, other = study.trials
    assert base.state == TrialState.COMPLETE and sorted(base.intermediate_values) == [1, 2, 3]
    assert other.state == TrialState.PRUNED and sorted(other.intermediate_values) == [1]
