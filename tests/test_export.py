"""``export``: the best (and top k) trials with the stored config, masked storage, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.cli import main
from search.config import StudyConfig
from search.export import export
from search.storage import open_storage
from search.study import PACKAGES, prepare_study


def add_trials(study: optuna.Study, config: StudyConfig, values: list[float | None]) -> None:
    """Trials without training: ``None`` is a pruned trial, a number a complete one."""
    space = {
        name: FloatDistribution(*param.bounds, log=param.log) for name, param in config.search_space
    }
    for value in values:
        number = len(study.trials)
        study.add_trial(
            create_trial(
                params={name: d.low + (d.high - d.low) / (number + 2) for name, d in space.items()},
                distributions=space,
                value=value,
                state=TrialState.PRUNED if value is None else TrialState.COMPLETE,
                user_attrs={"best_epoch": 2, "epochs_run": 2, "seed": 1000 + number},
                intermediate_values={} if value is None else {0: value / 2, 1: value},
            )
        )


@pytest.fixture
def study(tiny_config: StudyConfig, sqlite_url: str) -> optuna.Study:
    study, _ = prepare_study(tiny_config, open_storage(sqlite_url, tiny_config.storage))
    add_trials(study, tiny_config, [0.5, None, 0.75, 0.6])
    return study


def test_best_holds_what_retraining_needs(study, tiny_config, sqlite_url, tmp_path):
    paths = export(sqlite_url, "tiny", root=tmp_path)
    folder = tmp_path / "tiny"
    assert paths == [folder / "best.yaml", folder / "best.json"]
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best == json.loads((folder / "best.json").read_text())
    assert best["study_name"] == "tiny"
    assert (best["trial"], best["value"]) == (2, 0.75)
    assert best["best_epoch"] == 2 and best["seed"] == 1002
    assert best["params"] == study.trials[2].params
    assert best["config"] == tiny_config.model_dump(mode="json")  # model, optimizer, split...
    assert set(best["packages"]) == set(PACKAGES)
    assert best["storage"] == sqlite_url
    assert not (folder / "top.yaml").exists()


def test_packages_are_those_the_study_ran_with(study, sqlite_url, tmp_path):
    study.set_user_attr("packages", {"tensorflow": "2.0.0-recorded"})  # not this environment's
    export(sqlite_url, "tiny", root=tmp_path)
    assert yaml.safe_load((tmp_path / "tiny" / "best.yaml").read_text())["packages"] == {
        "tensorflow": "2.0.0-recorded"
    }


def test_top_k_in_rank_order(study, sqlite_url, tmp_path):
    export(sqlite_url, "tiny", top=5, root=tmp_path)
    top = yaml.safe_load((tmp_path / "tiny" / "top.yaml").read_text())
    assert [(t["rank"], t["trial"], t["value"]) for t in top["trials"]] == [
        (1, 2, 0.75),
        (2, 3, 0.6),
        (3, 0, 0.5),
    ]  # the pruned trial is not ranked
    assert top == json.loads((tmp_path / "tiny" / "top.json").read_text())


def test_storage_password_is_masked(tiny_config, postgres_url, tmp_path):
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    study, _ = prepare_study(tiny_config, open_storage(url, tiny_config.storage))
    add_trials(study, tiny_config, [0.5])
    export(url, "tiny", top=2, root=tmp_path)
    for path in (tmp_path / "tiny").iterdir():
        assert "s3cret-pw" not in path.read_text(), path
    assert yaml.safe_load((tmp_path / "tiny" / "best.yaml").read_text())["storage"].startswith(
        "postgresql+psycopg://postgres:***@"
    )


def _cli(capsys, monkeypatch, tmp_path: Path, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    code = main(["export", *args])
    err = capsys.readouterr().err
    return code, err


def test_cli_writes_under_exports(study, sqlite_url, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--storage", sqlite_url, "--study", "tiny", "--top", "2"]) == 0
    assert "exports/tiny/best.yaml" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "exports" / "tiny").iterdir()} == {
        "best.yaml", "best.json", "top.yaml", "top.json"
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", "nope"], "no study named 'nope'"),
        (["--study", "empty"], "no complete trial"),
    ],
)
def test_cli_study_errors(
    args, message, study, tiny_config, sqlite_url, tmp_path, capsys, monkeypatch
):
    prepare_study(tiny_config, open_storage(sqlite_url), "empty")
    code, err = _cli(capsys, monkeypatch, tmp_path, "--storage", sqlite_url, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "exports").exists()


def test_cli_storage_errors(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "missing.db"
    args = ["--storage", f"sqlite:///{missing}", "--study", "x"]
    code, err = _cli(capsys, monkeypatch, tmp_path, *args)
    assert code == 2 and "no such database file" in err
    assert not missing.exists()  # a read-only command creates no database

    url = "postgresql+psycopg://someone:s3cret-pw@127.0.0.1:1/none"  # nothing listens on port 1
    code, err = _cli(capsys, monkeypatch, tmp_path, "--storage", url, "--study", "x")
    assert code == 2 and "cannot open" in err and len(err.strip().splitlines()) == 1
    assert "s3cret-pw" not in err
