"""The benchmarks beyond the replay (tests/test_replay.py): their figures, the storage bench and
the trial loop, at tiny sizes. What they measure is not asserted (no timing in tests): that
they run the code they say they run and count what they say they count."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from bench import storage, training
from bench.common import median_range


def test_median_range_gives_median_min_max_and_runs():
    assert median_range([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "runs": 4}
    assert median_range([0.12345], digits=2) == {"median": 0.12, "min": 0.12, "max": 0.12, "runs": 1}


def test_the_storage_bench_runs_every_workers_trials(sqlite_url):
    rate = storage.trials_per_second(sqlite_url, workers=2, trials=3, name="bench-storage")
    assert rate > 0
    trials = optuna.load_study(study_name="bench-storage", storage=sqlite_url).get_trials()
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert all(set(t.params) == {"l1", "l2", "dropout"} and len(t.user_attrs) == 12 for t in trials)


def test_the_overhead_bench_runs_the_worker_loop_and_times_every_trial(cifar_dir, tmp_path, sqlite_url):
    result = training.overhead(cifar_dir, tmp_path, sqlite_url, {"train_size": 100, "val_size": 50},
                               epochs=1, trials=2)
    assert result["storage"] == sqlite_url and result["trials"] == 2
    assert result["overhead_s"]["runs"] == 2
    study = optuna.load_study(study_name="bench-overhead", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(t.user_attrs["epochs_run"] == 1 for t in study.trials)

