"""``export``: the best (and top k) trials with the stored config, masked storage, clean errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import create_trial
from scipy import stats

from search.base.config import StudyConfig
from search.interfaces.cli import main
from search.results.confirm import companion_config
from search.results.export import export
from search.results.report import write_reports
from search.testing import add_trials, trial_distributions
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import PACKAGES, prepare_study


@pytest.fixture
def study(tiny_config: StudyConfig, sqlite_url: str) -> optuna.Study:
    study, _ = prepare_study(tiny_config, open_storage(sqlite_url, tiny_config.storage))
    add_trials(study, tiny_config, [0.5, None, 0.75, 0.6])
    return study


def test_best_holds_what_retraining_needs(study, tiny_config, sqlite_url, tmp_path):
    paths = export(StorageOpener(sqlite_url), "tiny", root=tmp_path)
    folder = tmp_path / "tiny"
    assert paths == [folder / "best.yaml", folder / "best.json"]
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best == json.loads((folder / "best.json").read_text())
    assert best["study_name"] == "tiny"
    assert (best["trial"], best["value"]) == (2, 0.75)
    assert best["best_epoch"] == 2 and best["seed"] == 1002
    assert best["params"] == tiny_config.search_space.effective(study.trials[2].params)  # as used
    assert best["sampled"] == study.trials[2].params  # as stored
    assert best["config"] == tiny_config.model_dump(mode="json")  # model, optimizer, split...
    assert set(best["packages"]) == set(PACKAGES)
    assert best["storage"] == sqlite_url
    assert not (folder / "top.yaml").exists()
    assert best["confirmed"] is False and best["note"].startswith("unconfirmed: ")
    assert (best["baseline"]["trial"], best["baseline"]["value"]) == (0, 0.5)
    assert best["baseline"]["params"] == {"l1": 0.0, "l2": 0.001, "dropout": 0.5}
    assert best["gain"] == {"mean": 0.25, "low": None, "high": None, "method": "one search run each"}


def add_confirmations(storage, config: StudyConfig, runs: dict) -> None:
    """Complete confirmation runs without training: ``{trial number or "baseline": values}``."""
    companion, _ = prepare_study(companion_config(config), storage, "tiny.confirm")
    companion.set_user_attr("confirms", "tiny")
    search = storage.load("tiny")
    for key, values in runs.items():
        source = 0 if key == "baseline" else key
        for i, value in enumerate(values):
            attrs = {"source_trial": source, "seed_index": i, "seed": 7 + i, "baseline": key == "baseline"}
            params = search.trials[source].params
            companion.add_trial(create_trial(params=params, distributions=trial_distributions(config, params),
                                             value=value, user_attrs=attrs))


def test_confirmations_rank_the_export_and_give_the_gain(study, tiny_config, sqlite_url, tmp_path):
    storage = open_storage(sqlite_url, tiny_config.storage)
    add_trials(study, tiny_config, [0.9])  # trial 4: the best search value, unconfirmed
    runs = {3: [0.70, 0.72, 0.74], 2: [0.60, 0.61], "baseline": [0.50, 0.52, 0.51]}
    add_confirmations(storage, tiny_config, runs)
    junk = [{"source_trial": 2, "seed_index": "1", "baseline": False},  # read from a shared DB:
            {"source_trial": True, "seed_index": 0}, {"seed_index": -1, "baseline": True},
            {"source_trial": 2, "seed_index": 0, "baseline": False}]  # a second run of one seed
    params = study.trials[2].params
    space = trial_distributions(tiny_config, params)
    companion = storage.load("tiny.confirm")
    for attrs in junk:
        companion.add_trial(create_trial(params=params, distributions=space, value=0.99,
                                         user_attrs=attrs))

    export(StorageOpener(sqlite_url), "tiny", top=5, root=tmp_path)
    best = yaml.safe_load((tmp_path / "tiny" / "best.yaml").read_text())
    assert best == json.loads((tmp_path / "tiny" / "best.json").read_text())
    assert (best["trial"], best["value"], best["confirmed"]) == (3, 0.6, True)  # not trial 4, nor 2
    confirmation = best["confirmation"]
    assert confirmation["study"] == "tiny.confirm" and confirmation["epochs"] == 2
    chosen, base = confirmation["chosen"], confirmation["baseline"]
    assert (chosen["trial"], chosen["seeds"], chosen["values"]) == (3, [7, 8, 9], runs[3])
    assert chosen["mean"] == pytest.approx(0.72) and chosen["std"] == pytest.approx(0.02)
    assert (base["trial"], base["baseline"], base["values"]) == (0, True, runs["baseline"])
    assert base["mean"] == pytest.approx(0.51) and base["std"] == pytest.approx(0.01)
    va, vb = 0.02**2 / 3, 0.01**2 / 3  # Welch by hand
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    gain = best["gain"]
    assert gain["mean"] == pytest.approx(0.21) and gain["confidence"] == 0.95
    assert (gain["low"], gain["high"]) == (round(0.21 - half, 4), round(0.21 + half, 4))  # JSON: 4 places
    assert [r["trial"] for r in confirmation["ranking"]] == [3, 2, 0]

    top = yaml.safe_load((tmp_path / "tiny" / "top.yaml").read_text())
    assert top["confirmed"] is True
    assert [t["trial"] for t in top["trials"]] == [3, 2, 0, 4]  # confirmed by mean, then the rest
    assert top["trials"][1]["confirmed"]["values"] == [0.60, 0.61] and top["trials"][3]["confirmed"] is None

    (page,) = write_reports(StorageOpener(sqlite_url), "tiny", root=tmp_path)  # the report shows the same
    text = page.read_text()
    assert "<h2>Baseline vs best</h2>" in text
    assert "<td>baseline</td><td>trial 0 (baseline)</td><td>0.5000</td><td>l1 off, l2 0.001, dropout 0.5</td>" \
           "<td>0.5100 ± 0.0100 (3 runs)</td>" in text
    assert "<td>best (confirmed)</td><td>trial 3</td><td>0.6000</td>" in text and "0.7200 ± 0.0200 (3 runs)" in text
    assert (f"best (confirmed): search trial 3, 0.7200 ± 0.0200 (3 runs); gain +0.2100 "
            f"(95% CI {0.21 - half:+.4f} to {0.21 + half:+.4f}) over the baseline") in text


def test_packages_are_those_the_study_ran_with(study, sqlite_url, tmp_path):
    study.set_user_attr("packages", {"tensorflow": "2.0.0-recorded"})  # not this environment's
    export(StorageOpener(sqlite_url), "tiny", root=tmp_path)
    assert yaml.safe_load((tmp_path / "tiny" / "best.yaml").read_text())["packages"] == {
        "tensorflow": "2.0.0-recorded"
    }


def test_top_k_in_rank_order(study, sqlite_url, tmp_path):
    export(StorageOpener(sqlite_url), "tiny", top=5, root=tmp_path)
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
    export(StorageOpener(url), "tiny", top=2, root=tmp_path)
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


@pytest.mark.parametrize("name", ["1e5", "0o17", "0x1F", "123", "yes", "1_000"])
def test_an_export_reads_back_as_written_whatever_the_study_name(name, tiny_config, sqlite_url, tmp_path):
    """A name that YAML 1.1 or 1.2 could take for a number or a flag is quoted in best.yaml."""
    from search.results.retrain import read_export

    config = tiny_config.model_copy(update={"study_name": name})
    study, _ = prepare_study(config, open_storage(sqlite_url, config.storage))
    add_trials(study, config, [0.5])
    path = export(StorageOpener(sqlite_url), name, root=tmp_path)[0]
    assert read_export(path).study_name == name == yaml.safe_load(path.read_text())["study_name"]
