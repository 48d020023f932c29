"""A few-trial search on tiny synthetic data, persisted to SQLite, run in-process."""

import math
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search.base.config import parse_config
from search.base.errors import UsageError
from search.interfaces.cli import main
from search.learning.data import load_split
from search.running import workers
from search.running.runner import SearchRequest, run_search
from search.testing import make_cifar_folder, synthetic_images, tiny_raw, write_batch
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import make_pruner, prepare_study

ATTRS = {"n_params", "epochs_run", "best_epoch", "seconds_per_epoch", "last_train_accuracy",
         "last_val_accuracy", "last_train_loss", "last_val_loss", "seed"}


def load(url, name="tiny"):
    return optuna.load_study(study_name=name, storage=url)


def test_trials_are_persisted_and_a_second_run_resumes(tmp_path, cifar_dir, sqlite_url):
    config = parse_config(tiny_raw(tmp_path), "tiny")
    assert run_search(SearchRequest(config, 3, StorageOpener(sqlite_url), data_dir=str(cifar_dir))) == 0

    study = load(sqlite_url)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert study.metric_names == ["val_accuracy"]
    assert study.user_attrs["split"] == {"train_size": 400, "val_size": 100, "split_seed": 0}
    for t in trials:
        assert {"l1_on", "l2_on", "dropout"} <= set(t.params) <= {"l1_on", "l1", "l2_on", "l2", "dropout"}
        assert ("l1" in t.params) is t.params["l1_on"] and ("l2" in t.params) is t.params["l2_on"]
        assert ATTRS <= set(t.user_attrs)
        assert t.user_attrs["n_params"] == 122_570 and t.user_attrs["epochs_run"] == 2
        assert sorted(t.intermediate_values) == [1, 2]  # epochs, counted as Keras prints them
        assert t.value == max(t.intermediate_values.values())
        assert t.user_attrs["best_epoch"] == max(t.intermediate_values, key=t.intermediate_values.get)
        assert t.user_attrs["last_val_accuracy"] == t.intermediate_values[2]
    first = [(t.params, t.value, t.user_attrs) for t in trials]

    assert run_search(SearchRequest(config, 2, StorageOpener(sqlite_url), data_dir=str(cifar_dir))) == 0
    study = load(sqlite_url)
    assert len(study.trials) == 5
    assert [(t.params, t.value, t.user_attrs) for t in study.trials[:3]] == first
    assert len({tuple(t.params.values()) for t in study.trials}) == 5  # no replayed points


def test_the_pruner_prunes_a_hopeless_trial(tmp_path, cifar_dir, sqlite_url):
    raw = tiny_raw(tmp_path, pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
                   training={"epochs": 3, "batch_size": 50})
    raw["search_space"] = {"l1": {"low": 1e-6, "high": 10.0, "log": True}}
    raw["baseline"] = None  # l1 = 0 is outside this space
    config = parse_config(raw, "tiny")
    study, _ = prepare_study(config, open_storage(sqlite_url))
    study.enqueue_trial({"l1": 1e-6, "l2": 1e-6, "dropout": 0.0})
    study.enqueue_trial({"l1": 10.0, "l2": 1e-6, "dropout": 0.0})  # crushes every weight
    run_search(SearchRequest(config, 2, StorageOpener(sqlite_url), data_dir=str(cifar_dir)))
    good, hopeless = load(sqlite_url).trials
    assert good.state == TrialState.COMPLETE
    assert hopeless.state == TrialState.PRUNED
    assert hopeless.user_attrs["epochs_run"] < 3


def test_a_diverging_trial_is_pruned_with_its_reason(tmp_path, cifar_dir, sqlite_url):
    raw = tiny_raw(tmp_path)
    raw["search_space"] = {"l1": {"value": 1e38}}  # the penalty overflows float32
    raw["baseline"] = None
    config = parse_config(raw, "tiny")
    assert run_search(SearchRequest(config, 1, StorageOpener(sqlite_url), data_dir=str(cifar_dir))) == 0
    (trial,) = load(sqlite_url).trials
    assert trial.state == TrialState.PRUNED
    assert "diverged" in trial.user_attrs["stop_reason"]


def test_a_conflicting_config_is_refused_and_nothing_is_written(tmp_path, cifar_dir, sqlite_url):
    config = parse_config(tiny_raw(tmp_path), "tiny")
    run_search(SearchRequest(config, 1, StorageOpener(sqlite_url), data_dir=str(cifar_dir)))
    before = load(sqlite_url)
    changed = parse_config(tiny_raw(tmp_path, data={"train_size": 300, "val_size": 100}), "tiny")
    with pytest.raises(UsageError, match="data.train_size: stored 400, config has 300"):
        run_search(SearchRequest(changed, 1, StorageOpener(sqlite_url), data_dir=str(cifar_dir)))
    after = load(sqlite_url)
    assert len(after.trials) == len(before.trials) == 1
    assert after.user_attrs == before.user_attrs


def test_resuming_on_other_data_is_refused_and_nothing_is_written(
    tmp_path, cifar_dir, sqlite_url, capsys
):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path, training={"epochs": 1, "batch_size": 50})))
    search = ["search", "--config", str(config), "--storage", sqlite_url, "--trials", "1"]
    assert main([*search, "--data-dir", str(cifar_dir)]) == 0
    copy = make_cifar_folder(tmp_path / "copy")  # the same images in another folder
    assert main([*search, "--data-dir", str(copy)]) == 0
    before = load(sqlite_url)
    assert len(before.trials) == 2 and before.user_attrs["data"]["images"] == 500
    write_batch(copy / "data_batch_3", *synthetic_images(100, seed=33))
    capsys.readouterr()
    worker = ["worker", "--study", "tiny", "--storage", sqlite_url, "--data-dir", str(copy)]
    for args in ([*search, "--data-dir", str(copy)], worker):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.endswith("use the original data or a new STUDY name\n")
        assert "study 'tiny' was searched on other data (stored 500 images sha256 " in err
    after = load(sqlite_url)
    assert len(after.trials) == 2 and after.user_attrs == before.user_attrs


def test_a_study_from_before_data_was_recorded_records_it_on_resume(
    tmp_path, cifar_dir, sqlite_url
):
    config = parse_config(tiny_raw(tmp_path), "tiny")
    assert "data" not in prepare_study(config, open_storage(sqlite_url))[0].user_attrs
    data = load_split(cifar_dir, config.data).fingerprint
    assert prepare_study(config, open_storage(sqlite_url), data=data)[0].user_attrs["data"] == data
    other = {**data, "sha256": "0" * 64}
    with pytest.raises(UsageError, match="stored 500 images sha256 .*, DATA_DIR has 500 images"):
        prepare_study(config, open_storage(sqlite_url), data=other)


def test_seeds_differ_per_trial_and_are_recorded(tmp_path, cifar_dir, sqlite_url):
    config = parse_config(tiny_raw(tmp_path, training={"epochs": 1, "batch_size": 50}), "tiny")
    run_search(SearchRequest(config, 2, StorageOpener(sqlite_url), data_dir=str(cifar_dir)))
    seeds = [t.user_attrs["seed"] for t in load(sqlite_url).trials]
    assert len(set(seeds)) == 2 and all(isinstance(s, int) for s in seeds)
    assert all(not math.isnan(t.user_attrs["seconds_per_epoch"]) for t in load(sqlite_url).trials)


@pytest.mark.parametrize("pruner, first_pruned_epoch", [
    ({"name": "median", "n_startup_trials": 1, "n_warmup_steps": 2}, 3),  # 2 warm-up epochs
    ({"name": "successive_halving", "min_resource": 2, "reduction_factor": 2}, 2),  # after 2 epochs
])
def test_pruner_settings_count_epochs_as_the_trials_report_them(pruner, first_pruned_epoch):
    setting = parse_config({"study_name": "p", "pruner": pruner}, "p").pruner
    study = optuna.create_study(direction="maximize", pruner=make_pruner(setting, 6))
    epochs = []
    for value in (0.9, 0.1):  # a good trial, then a hopeless one
        trial = study.ask()
        for epoch in range(1, 7):  # as EpochPruningCallback reports
            trial.report(value, epoch)
            if trial.should_prune():
                break
        epochs.append(epoch)
        study.tell(trial, value)
    assert epochs == [6, first_pruned_epoch]


def test_the_time_budget_starts_no_trial_after_it_and_says_so(tmp_path, cifar_dir, sqlite_url,
                                                              monkeypatch, capsys):
    readings = iter(range(0, 3600, 60))  # each reading of the budget's clock is a minute later
    monkeypatch.setattr(workers, "time", SimpleNamespace(monotonic=lambda: float(next(readings))))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path, training={"epochs": 1, "batch_size": 50})))
    args = ["search", "--config", str(config), "--storage", sqlite_url, "--data-dir", str(cifar_dir),
            "--workers", "1"]  # the fake clock is this process's
    assert main([*args, "--trials", "5", "--timeout", "1.5"]) == 0  # set at 0, due at 90 s
    assert [t.state for t in load(sqlite_url).trials] == [TrialState.COMPLETE]  # taken at 60 s only
    out = capsys.readouterr().out
    assert "ran 1 trials" in out
    assert "the time budget (1.5 min) ended the search: no trial was started after it" in out
    assert main([*args, "--trials", "1"]) == 0
    assert "time budget" not in capsys.readouterr().out
