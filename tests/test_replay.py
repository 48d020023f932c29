"""bench.replay: pruners replayed over recorded curves, and curves recorded from a study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from bench import replay
from search.base import config as cfg
from search.base.errors import UsageError
from search.tuning.storage import open_storage
from search.tuning.study import prepare_study

EPOCHS = 20
ORDERS = 6  # not the default 20: a replay that ignores --orders fails


def synthetic_curves() -> replay.Curves:
    """3 strongly regularized trials that start low and end highest; 9 weak ones that plateau lower."""
    trials = []
    for i in range(12):
        strong = i % 4 == 0  # trials 0, 4, 8
        top, rate = (0.80 + 0.01 * i / 4, 4.0) if strong else (0.55 + 0.015 * i, 1.5)
        curve = [round(top * (1 - math.exp(-(step + 1) / rate)), 6) for step in range(EPOCHS)]
        params = {"l1": 1e-3 if strong else 1e-6, "l2": 1e-3 if strong else 1e-6, "dropout": 0.5 if strong else 0.1}
        trials.append({"number": i, "params": params, "val_accuracy": curve})
    return replay.Curves(source="synthetic", config={}, epochs=EPOCHS, trials=trials)


@pytest.fixture(scope="module")
def result() -> dict:
    return replay.run(synthetic_curves(), orders=ORDERS)


def setting(result: dict, pruner: cfg.Pruner) -> dict:
    return next(s for s in result["settings"] if s["setting"] == replay.label(pruner))


def test_early_median_pruner_kills_the_eventual_winner(result: dict) -> None:
    early = setting(result, cfg.MedianPruner(n_startup_trials=5, n_warmup_steps=1))
    assert early["top_pruned_orders"] > 0
    assert early["worst_gap"] < 0


def test_no_pruner_has_no_regret_and_spends_everything(result: dict) -> None:
    none = setting(result, cfg.NoPruner(name="none"))
    assert none == {**none, "epochs_fraction": 1.0, "top_pruned_orders": 0, "worst_gap": 0}
    assert result["orders"] == ORDERS and result["trials"] == 12 and result["epochs"] == EPOCHS


def test_a_late_decision_keeps_the_winner_for_less(result: dict) -> None:
    late = setting(result, cfg.MedianPruner(n_startup_trials=5, n_warmup_steps=10))
    assert late["top_pruned_orders"] == 0 and late["worst_gap"] == 0
    assert late["epochs_fraction"] < 0.9


def test_the_choice_is_the_cheapest_setting_without_regret(result: dict) -> None:
    safe = [s for s in result["settings"] if s["worst_gap"] >= -replay.TOLERANCE]
    chosen = setting_named(result, result["chosen"])
    assert chosen in safe and chosen["worst_gap"] == 0  # the synthetic winners are 0.05 apart
    assert chosen["epochs_fraction"] == min(s["epochs_fraction"] for s in safe) < 0.8
    assert f"within 0.0040): {result['chosen']}" in replay.markdown(result)
    assert f"{result['chosen']} (chosen)" in replay.markdown(result)


def test_a_loss_within_the_tolerance_is_no_regret() -> None:
    lenient = replay.run(synthetic_curves(), orders=ORDERS, tolerance=0.5)
    cheapest = min(lenient["settings"], key=lambda s: s["epochs_fraction"])
    assert lenient["chosen"] == cheapest["setting"] and cheapest["worst_gap"] < -replay.TOLERANCE
    assert "within 0.5000" in replay.markdown(lenient)


@pytest.mark.parametrize("bad", ["abc", "nan", "-1", "1"])
def test_a_bad_tolerance_is_one_line_and_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as stop:
        replay.main(["replay", "missing.json", "--tolerance", bad])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"python -m bench.replay replay: error: argument --tolerance: "
                                       f"{bad!r} is not an accuracy difference in [0, 1)\n")


def setting_named(result: dict, name: str) -> dict:
    return next(s for s in result["settings"] if s["setting"] == name)


def test_order_matters_and_is_seeded() -> None:
    curves, pruner = synthetic_curves(), cfg.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    assert replay.evaluate(pruner, curves, 3) == replay.evaluate(pruner, curves, 3)
    strong_first = sorted(curves.trials, key=lambda t: t.number % 4 != 0)
    assert replay.replay_order(pruner, strong_first, EPOCHS)[1].isdisjoint({0, 4, 8})
    assert {0, 4, 8} <= replay.replay_order(pruner, strong_first[::-1], EPOCHS)[1]


# Recording from a real SQLite study, built with Optuna as the service's objective fills it.

def make_study(url: str, name: str, pruner: str = "none") -> optuna.Study:
    config = cfg.StudyConfig(study_name=name, training=cfg.Training(epochs=4), pruner={"name": pruner})
    return prepare_study(config, open_storage(url))[0]


def add_trial(study: optuna.Study, curve: list[float], state: str = "complete") -> None:
    trial = study.ask({"l1": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
                       "l2": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
                       "dropout": optuna.distributions.FloatDistribution(0.0, 0.7)})
    for step, value in enumerate(curve, start=1):  # epochs from 1, as the objective reports
        trial.report(value, step)
    if state == "complete":
        study.tell(trial, max(curve))
    else:
        study.tell(trial, state=optuna.trial.TrialState[state.upper()])


def test_record_writes_full_complete_curves_and_round_trips(sqlite_url: str, tmp_path: Path) -> None:
    study = make_study(sqlite_url, "rec-1.v2")
    add_trial(study, [0.1, 0.2, 0.3, 0.35])
    add_trial(study, [0.2, 0.3], state="pruned")
    add_trial(study, [0.1, 0.15])  # complete but short: not a full curve
    add_trial(study, [0.1, float("nan"), 0.3, 0.4])
    add_trial(study, [0.3, 0.4, 0.5, 0.55])
    add_trial(study, [0.3, 0.4, 0.5, 0.6], state="fail")
    out = tmp_path / "curves.json"
    assert replay.main(["record", "--storage", sqlite_url, "--study", study.study_name, "--out", str(out)]) == 0

    curves = replay.load(out)
    assert curves.epochs == 4 and curves.config["training"]["epochs"] == 4 and "storage" not in curves.config
    assert [(t.number, t.val_accuracy) for t in curves.trials] == [(0, [0.1, 0.2, 0.3, 0.35]),
                                                                  (4, [0.3, 0.4, 0.5, 0.55])]
    assert curves.trials[1].params == study.trials[4].params
    assert "2 of its 4 complete trials" in curves.source
    raw = json.loads(out.read_text())
    assert set(raw) == {"source", "config", "epochs", "trials"}
    assert replay.Curves.model_validate(raw) == curves


def test_record_refuses_a_study_without_full_curves(sqlite_url: str, tmp_path: Path, capsys) -> None:
    study = make_study(sqlite_url, "short")
    add_trial(study, [0.1, 0.2])
    add_trial(study, [0.1, 0.2, 0.3, 0.4], state="pruned")
    out = tmp_path / "curves.json"
    assert replay.main(["record", "--storage", sqlite_url, "--study", "short", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no complete trial with all 4 epochs" in err
    assert not out.exists()


@pytest.mark.parametrize("study_name, message", [("pruned", "ran the median pruner"), ("missing", "no study named")])
def test_record_refuses_a_pruned_or_missing_study(sqlite_url: str, study_name: str, message: str) -> None:
    add_trial(make_study(sqlite_url, "pruned", pruner="median"), [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(UsageError, match=message):
        replay.record(sqlite_url, study_name)


def test_record_needs_an_existing_database(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such database file"):
        replay.record(f"sqlite:///{tmp_path / 'absent.db'}", "x")
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize("text, message", [
    ("not json", "Invalid JSON"),
    ('{"source": "s", "config": {}, "epochs": 2, "trials": [{"number": 0, "params": {}, '
     '"val_accuracy": [0.1]}]}', "trial 0 has 1 values, not 2"),
    ('{"source": "s", "config": {}, "epochs": 1, "trials": [{"number": 0, "params": {}, '
     '"val_accuracy": [NaN]}]}', "val_accuracy"),
    ('{"source": "s", "config": {}, "epochs": 1, "trials": [{"number": 0, "params": {}, '
     '"val_accuracy": [1.5]}]}', "less than or equal to 1"),
    ('{"source": "s", "config": {}, "epochs": 1, "trials": []}', "trials"),
])
def test_a_bad_curves_file_is_one_line(tmp_path: Path, capsys, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert replay.main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(path) in err
