"""``retrain``: the exported trial trained again and tested once, its files beside the export."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from search.base.config import parse_config
from search.base.errors import UsageError
from search.base.stats import gain as stats_gain
from search.interfaces.cli import main
from search.learning.data import load_test
from search.results.export import export
from search.results.retrain import describe_metrics, read_export, resolve_export, retrain
from search.running.runner import run_search
from search.testing import tiny_raw

OUTPUTS = {"model.keras", "history.json", "curves.png", "metrics.json"}


def kept_model_accuracy(folder: Path, cifar_dir: Path) -> float:
    """The test accuracy of the kept ``model.keras``, evaluated here on the test batch."""
    x, y = load_test(cifar_dir)
    model = keras.saving.load_model(folder / "model.keras")
    return float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))


@pytest.fixture(scope="module")
def best(tmp_path_factory: pytest.TempPathFactory, cifar_dir: Path) -> Path:
    """A real two-trial search (the baseline and one more) on the synthetic batches, exported."""
    tmp = tmp_path_factory.mktemp("retrain")
    url = f"sqlite:///{tmp / 'optuna.db'}"
    run_search(parse_config(tiny_raw(tmp), "tiny"), 2, storage_url=url, data_dir=str(cifar_dir))
    export(url, "tiny", root=tmp / "exports")
    return tmp / "exports" / "tiny" / "best.yaml"


def test_reproduces_the_trial_and_tests_once(best, cifar_dir):
    exported = yaml.safe_load(best.read_text())
    metrics = retrain(best, str(cifar_dir))
    assert OUTPUTS <= {p.name for p in best.parent.iterdir()}
    assert json.loads((best.parent / "metrics.json").read_text()) == metrics
    assert (metrics["train_images"], metrics["test_images"]) == (400, 100)
    assert metrics["epochs"] == exported["best_epoch"] and metrics["seed"] == exported["seed"]
    # Same seed, params, split and epochs, and the same threads (the trial ran in this process):
    # the trial's validation accuracy (100 images) exactly.
    assert metrics["val_accuracy"] == pytest.approx(exported["value"], abs=1e-6)
    assert metrics["test_accuracy"] == pytest.approx(kept_model_accuracy(best.parent, cifar_dir), abs=1e-6)
    assert math.isfinite(metrics["test_loss"]) and metrics["test_loss"] > 0
    history = json.loads((best.parent / "history.json").read_text())
    assert len(history["val_accuracy"]) == exported["best_epoch"]

    model = keras.saving.load_model(best.parent / "model.keras")
    assert model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape == (2, 10)


def test_seeds_train_both_configs_and_give_the_gain(best, cifar_dir):
    exported = yaml.safe_load(best.read_text())
    metrics = retrain(best, str(cifar_dir), seeds=2)
    assert json.loads((best.parent / "metrics.json").read_text()) == metrics
    assert metrics["seeds"] == 2
    for name, entry in (("chosen", exported), ("baseline", exported["baseline"])):
        result = metrics[name]
        assert result["trial"] == entry["trial"] and result["params"] == entry["params"]
        assert result["seeds"][0] == entry["seed"] and len(set(result["seeds"])) == 2  # then a fresh one
        assert result["seeds"] == [r["seed"] for r in result["runs"]]
        accuracies = result["test_accuracy"]
        assert accuracies == [r["test_accuracy"] for r in result["runs"]] and len(accuracies) == 2
        assert result["mean"] == pytest.approx(statistics.fmean(accuracies))
        assert result["std"] == pytest.approx(statistics.stdev(accuracies))
        assert [len(r["history"]["val_accuracy"]) for r in result["runs"]] == [entry["best_epoch"]] * 2
    assert metrics["chosen"]["seeds"][1] != metrics["baseline"]["seeds"][1]
    assert metrics["test_accuracy"] == metrics["chosen"]["test_accuracy"][0]  # the model kept
    gain = metrics["gain"]
    assert gain["mean"] == pytest.approx(metrics["chosen"]["mean"] - metrics["baseline"]["mean"])
    assert gain == stats_gain(metrics["chosen"]["test_accuracy"], metrics["baseline"]["test_accuracy"])
    assert gain["low"] is None or gain["low"] <= gain["mean"] <= gain["high"]
    assert "gain over the baseline: " in describe_metrics(metrics)


def test_no_baseline_trains_the_chosen_config_only(best, cifar_dir, capsys, monkeypatch):
    monkeypatch.chdir(best.parent.parent.parent)
    assert main(["retrain", "--config", str(best), "--data-dir", str(cifar_dir), "--no-baseline"]) == 0
    assert "baseline: not trained" in capsys.readouterr().out
    metrics = json.loads((best.parent / "metrics.json").read_text())
    assert metrics["baseline"] is None and metrics["gain"] is None and len(metrics["chosen"]["runs"]) == 1


def test_full_trains_on_every_training_image(best, cifar_dir):
    metrics = retrain(best, str(cifar_dir), full=True)
    assert metrics["full"] and metrics["train_images"] == 500
    assert metrics["val_accuracy"] is None
    assert metrics["test_accuracy"] == pytest.approx(kept_model_accuracy(best.parent, cifar_dir), abs=1e-6)
    assert (best.parent / "curves.png").stat().st_size > 0


def test_a_study_config_means_its_export(best, tmp_path, monkeypatch):
    monkeypatch.chdir(best.parent.parent.parent)  # where exports/ is
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    assert resolve_export(config) == Path("exports/tiny/best.yaml")
    assert resolve_export(best) == best


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "missing.yaml"], "missing.yaml: no such file"),
        (["--config", "study.yaml"], "exports/tiny/best.yaml: no export of this study yet"),
        (["--config", "study.yaml", "--study", "other"], "exports/other/best.yaml: no export"),
        (["--config", "bad.yaml"], "not an export (no params), nor a study config"),
        (["--config", "half.yaml"], "half.yaml: not an export (seed: Field required)"),
    ],
)
def test_cli_errors(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("study.yaml").write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    Path("bad.yaml").write_text("trial: 3\n")
    Path("half.yaml").write_text(yaml.safe_dump({"study_name": "x", "trial": 1, "value": 0.5,
                                                 "best_epoch": 2, "params": {}, "config": {}}))
    assert main(["retrain", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


EXPORT = {"study_name": "x", "trial": 1, "value": 0.5, "best_epoch": 2, "seed": 3,
          "params": {"l1": 0.0, "l2": 0.001, "dropout": 0.5}, "config": {}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"l1": -1e-3}, "params.l1: a penalty cannot be negative (-0.001)"),
        ({"l2": float("nan")}, "params.l2: Input should be a finite number"),
        ({"l1": float("inf")}, "params.l1: Input should be a finite number"),
        ({"dropout": 1.0}, "params.dropout: dropout must lie in [0, 1), got 1.0"),
        ({"momentum": 0.9}, "params.momentum: unknown key"),
        ({"dropout": None}, "params.dropout: Input should be a valid number"),
    ],
)
def test_an_edited_export_is_checked_like_a_config(change, message, tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({**EXPORT, "params": {**EXPORT["params"], **change}}))
    with pytest.raises(UsageError) as info:
        read_export(path)
    assert str(info.value) == f"{path}: not an export ({message})"


def test_an_export_with_a_repeated_key_or_a_negative_seed_is_refused(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(EXPORT) + "seed: 4\n")
    with pytest.raises(UsageError, match=r"best.yaml: not valid YAML \(duplicate key 'seed' on line \d+\)$"):
        read_export(path)
    path.write_text(yaml.safe_dump({**EXPORT, "seed": -1}))
    with pytest.raises(UsageError, match="seed: Input should be greater than or equal to 0"):
        read_export(path)
    path.write_text(yaml.safe_dump(EXPORT))
    assert read_export(path).params.l2 == 0.001


def test_retraining_turns_a_value_below_off_below_off(tmp_path, cifar_dir, monkeypatch):
    config = parse_config(tiny_raw(tmp_path), "tiny").model_dump(mode="json")
    assert config["search_space"]["l1"]["off_below"] == 1e-6
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({**EXPORT, "params": {"l1": 5e-7, "l2": 2e-3, "dropout": 0.3}, "config": config}))
    built = []

    def stop(params, training, seed):
        built.append(params)
        raise RuntimeError("built")

    monkeypatch.setattr("search.learning.training.seeded_model", stop)
    with pytest.raises(RuntimeError, match="built"):
        retrain(path, str(cifar_dir))
    assert built == [{"l1": 0.0, "l2": 2e-3, "dropout": 0.3}]
