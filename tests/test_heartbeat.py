"""A worker that dies mid-trial: its trial goes stale, is failed and retried up to ``max_retry``.

No test waits for a grace period to pass: a dead worker's trial is a RUNNING trial whose heartbeat
row is set far in the past (the ``stale`` fixture), so nothing depends on how fast a trial runs or how long a heartbeat takes to go stale. The live worker plays
its epochs (``played_fit``): which trial it runs is the point, not the training.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.base.config import StudyConfig, parse_config
from search.running.workers import Budget, WorkerSpec, run_worker
from search.testing import played_fit, tiny_raw
from search.tuning import objective as objective_module
from search.tuning.objective import suggest
from search.tuning.storage import StudyStorage, open_storage
from search.tuning.study import prepare_study

BACKENDS = ["sqlite_url", "postgres_url", "mysql_url"]


@pytest.fixture(autouse=True)
def played(monkeypatch):
    monkeypatch.setattr(objective_module, "fit", played_fit([0.5]))


def dead_workers_trial(study: optuna.Study, storage: StudyStorage, config: StudyConfig, stale) -> int:
    """Start the next trial (a queued retry first) as a worker would, then let its heartbeat go stale."""
    trial = study.ask()
    suggest(trial, config.search_space)  # the parameters as the objective stores them
    stale(storage.rdb)
    return trial.number


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("max_retry", [0, 1, 2])
def test_a_dead_workers_trial_is_retried_up_to_max_retry(backend, max_retry, request, tmp_path, cifar_dir, stale):
    url = request.getfixturevalue(backend)
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None,
                   training={"epochs": 1, "batch_size": 50},
                   storage={"artifacts": str(tmp_path / "a"), "heartbeat_interval": 5,
                            "grace_period": 10, "max_retry": max_retry})
    config = parse_config(raw, "tiny")
    storage = open_storage(url, config.storage)
    study, _ = prepare_study(config, storage)

    dead = [dead_workers_trial(study, storage, config, stale)]
    for _ in range(max_retry):  # each retry dies too, until the retries are used up
        optuna.storages.fail_stale_trials(study)
        dead.append(dead_workers_trial(study, storage, config, stale))
    assert run_worker(WorkerSpec(config, url, "tiny", str(cifar_dir)), Budget(1), storage=storage) == 0

    trials = storage.load("tiny").get_trials(deepcopy=False)
    assert [trials[n].state for n in dead] == [TrialState.FAIL] * len(dead)
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert [t.number for t in retries] == dead[1:]  # each retry died in turn
    assert all(t.system_attrs["failed_trial"] == dead[0] for t in retries)  # Optuna names the first
    assert all(t.params == trials[dead[0]].params for t in retries)  # the same point each time
    (ran,) = [t for t in trials if t.state == TrialState.COMPLETE]  # what the live worker ran
    assert ran.params != trials[dead[0]].params  # retries used up: a fresh point
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_live_worker_runs_the_retry_first(backend, request, tmp_path, cifar_dir, stale):
    url = request.getfixturevalue(backend)
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None,
                   training={"epochs": 1, "batch_size": 50},
                   storage={"artifacts": str(tmp_path / "a"), "heartbeat_interval": 5,
                            "grace_period": 10, "max_retry": 1})
    config = parse_config(raw, "tiny")
    storage = open_storage(url, config.storage)
    study, _ = prepare_study(config, storage)
    dead = dead_workers_trial(study, storage, config, stale)

    assert run_worker(WorkerSpec(config, url, "tiny", str(cifar_dir)), Budget(1), storage=storage) == 0
    victim, retry = storage.load("tiny").get_trials(deepcopy=False)
    assert victim.number == dead and victim.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert retry.system_attrs["failed_trial"] == dead and retry.user_attrs["epochs_run"] == 1
