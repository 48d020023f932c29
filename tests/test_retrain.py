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
from search.running.runner import SearchRequest, run_search
from search.testing import make_cifar_folder, tiny_raw
from search.tuning.storage import StorageOpener

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
    run_search(SearchRequest(parse_config(tiny_raw(tmp), 'tiny'), 2, StorageOpener(url), data_dir=str(cifar_dir)))
    export(StorageOpener(url), "tiny", root=tmp / "exports")
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
        assert result["mean"] == round(statistics.fmean(accuracies), 4)  # 4 places: no float noise
        assert result["std"] == round(statistics.stdev(accuracies), 4)
        assert [len(r["history"]["val_accuracy"]) for r in result["runs"]] == [entry["best_epoch"]] * 2
    assert metrics["chosen"]["seeds"][1] != metrics["baseline"]["seeds"][1]
    assert metrics["test_accuracy"] == metrics["chosen"]["test_accuracy"][0]  # the model kept
    gain = metrics["gain"]
    assert gain["mean"] == pytest.approx(metrics["chosen"]["mean"] - metrics["baseline"]["mean"], abs=1e-4)
    assert gain == stats_gain(metrics["chosen"]["test_accuracy"], metrics["baseline"]["test_accuracy"])
    assert gain["low"] is None or gain["low"] <= gain["mean"] <= gain["high"]
    assert "gain over the baseline: " in describe_metrics(metrics)


def test_no_baseline_trains_the_chosen_config_only(best, cifar_dir, capsys, monkeypatch):
    monkeypatch.chdir(best.parent.parent.parent)
    assert main(["retrain", "--config", str(best), "--data-dir", str(cifar_dir), "--no-baseline"]) == 0
    out = capsys.readouterr().out
    assert "baseline: not trained" in out
    trial = yaml.safe_load(best.read_text())["trial"]
    assert f"chosen (search trial {trial}), seed 1 of 1: training " in out  # each run labelled
    assert f"chosen (search trial {trial}), seed 1 of 1: test accuracy " in out
    assert "Epoch 1/" not in out  # Keras' lines only with VERBOSE=1
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
        ({"dropout": None}, "params.dropout: Input should be a valid number, got NoneType None"),
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


def test_retraining_an_old_export_turns_a_value_below_off_below_off(tmp_path, cifar_dir, monkeypatch):
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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"best_epoch": True}, "best_epoch: Input should be a valid integer, got bool True"),
        ({"trial": "1"}, "trial: Input should be a valid integer, got str '1'"),
        ({"seed": 1.0}, "seed: Input should be a valid integer, got float 1.0"),
        ({"value": "0.5"}, "value: Input should be a valid number, got str '0.5'"),
        ({"params": {"l1": 0, "l2": "0.001", "dropout": 0}}, "params.l2: Input should be a valid number"),
        ({"baseline": {"params": dict(EXPORT["params"]), "seed": False}}, "baseline.seed: Input should be a valid"),
    ],
)
def test_export_values_are_strict(change, message, tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({**EXPORT, **change}))
    with pytest.raises(UsageError) as info:
        read_export(path)
    assert str(info.value).startswith(f"{path}: not an export ({message}")


def test_an_export_in_yaml_1_1_forms_is_refused(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(EXPORT).replace("seed: 3", "seed: 0:03"))  # YAML 1.1: 3
    with pytest.raises(UsageError, match=r"seed: Input should be a valid integer, got str '0:03'"):
        read_export(path)


def test_retrain_replaces_links_planted_beside_the_export(best, cifar_dir, tmp_path):
    outside = tmp_path / "precious"
    outside.write_text("keep me\n")
    for name in OUTPUTS:
        (best.parent / name).unlink(missing_ok=True)
        (best.parent / name).symlink_to(outside)
    retrain(best, str(cifar_dir), baseline=False)
    assert outside.read_text() == "keep me\n"
    for name in OUTPUTS:
        assert not (best.parent / name).is_symlink() and (best.parent / name).stat().st_size > 0
    assert not [p.name for p in best.parent.iterdir() if p.name.startswith(".")]  # no partial file


def test_retrain_refuses_data_the_study_was_not_searched_on(best, tmp_path, monkeypatch, capsys):
    assert yaml.safe_load(best.read_text())["data"]["images"] == 500  # the export carries it
    other = make_cifar_folder(tmp_path / "other", per_batch=100)
    (other / "data_batch_3").write_bytes((other / "data_batch_4").read_bytes())  # one batch differs
    before = {p.name: p.stat().st_mtime_ns for p in best.parent.iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("trained on other data")

    monkeypatch.setattr("search.learning.training.seeded_model", no_training)
    monkeypatch.chdir(best.parent.parent.parent)
    assert main(["retrain", "--config", str(best), "--data-dir", str(other)]) == 2
    err = capsys.readouterr().err
    assert "study 'tiny' was searched on other data (stored 500 images sha256 " in err
    assert err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in best.parent.iterdir()} == before  # nothing written


def test_a_diverged_run_is_named_and_left_out(best, cifar_dir, tmp_path, capsys):
    exported = yaml.safe_load(best.read_text())
    exported["params"]["l2"] = 1e300  # the loss overflows at once
    path = tmp_path / "diverged" / "best.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(exported))
    metrics = retrain(path, str(cifar_dir), seeds=2)
    text = (path.parent / "metrics.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail) == metrics  # no bare NaN
    json.loads((path.parent / "history.json").read_text(), parse_constant=pytest.fail)
    assert metrics["diverged"] and metrics["test_loss"] is None
    chosen, base = metrics["chosen"], metrics["baseline"]
    assert chosen["diverged"] == 2 and chosen["test_accuracy"] == [None, None] and chosen["mean"] is None
    assert base["diverged"] == 0 and None not in base["test_accuracy"] and base["mean"] is not None
    assert metrics["gain"] is None
    lines = describe_metrics(metrics).splitlines()
    assert lines[0].startswith("the kept model diverged (the loss is not finite): no result after ")
    assert lines[0].count("val_accuracy") == 1  # the trial's only: a diverged model's is chance
    assert lines[1] == f"chosen (search trial {chosen['trial']}): every run diverged (the loss is not finite): no result"
    assert lines[2].startswith(f"baseline (search trial {base['trial']}): test accuracy ")
    assert lines[-1] == "gain over the baseline: undefined (every run of one of them diverged)"
    assert "nan" not in describe_metrics(metrics).lower()


def test_an_export_without_a_data_record_is_retrained_with_a_warning(tmp_path, cifar_dir, monkeypatch, capsys):
    path = tmp_path / "best.yaml"
    config = parse_config(tiny_raw(tmp_path), "tiny").model_dump(mode="json")
    path.write_text(yaml.safe_dump({**EXPORT, "config": config}))  # no "data": an older export

    def stop(*args):
        raise RuntimeError("training starts")

    monkeypatch.setattr("search.learning.training.seeded_model", stop)
    with pytest.raises(RuntimeError, match="training starts"):
        retrain(path, str(cifar_dir))
    assert capsys.readouterr().err == (
        f"warning: {path} records no training data (exported before it did, or the study never "
        "recorded any): DATA_DIR is not checked against the search's\n"
    )


GOOD_DATA = {"images": 500, "per_class": [50] * 10, "sha256": "0" * 64}


@pytest.mark.parametrize(
    "data, message",
    [
        ({**GOOD_DATA, "images": "500"}, "data.images: Input should be a valid integer, got str '500'"),
        ({**GOOD_DATA, "per_class": [50] * 11}, "data.per_class: List should have at most 10 items"),
        ({**GOOD_DATA, "sha256": "x" * 64}, "data.sha256: String should match pattern"),
        ([1, 2], "data: Input should be a valid dictionary"),
    ],
)
def test_an_edited_data_record_is_refused(data, message, tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({**EXPORT, "data": data}))
    with pytest.raises(UsageError) as info:
        read_export(path)
    assert str(info.value).startswith(f"{path}: not an export ({message}")
    path.write_text(yaml.safe_dump({**EXPORT, "data": GOOD_DATA}))
    assert read_export(path).data.model_dump() == GOOD_DATA
