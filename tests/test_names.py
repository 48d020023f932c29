"""Study names are data, never a path: one rule, checked wherever a name becomes a file."""

from __future__ import annotations

import os

import optuna
import pytest
import yaml

from search.base.config import parse_config
from search.base.errors import UsageError
from search.base.names import MAX_LENGTH, check_name, inside
from search.interfaces.cli import main
from search.results.export import export
from search.results.retrain import read_export, resolve_export
from search.testing import add_trials, tiny_raw
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study

BAD = [
    "", ".", "..", "../evil", "a/b", "a\\b", "/etc/passwd", "-rf", ".hidden", "x'; rm -rf ~; '",
    'q"uote', "a b", "x\ny", "x\x00y", "tab\t", "\x1b[31mred", "\u202eexe.txt", "caf\u00e9",
    "\uff41\uff42", "a" * (MAX_LENGTH + 1), "a" * 300, "x$(id)", "~root",
]
GOOD = ["a", "tiny", "cifar10-regularization", "A.b_c-1", "v1.2..3", "a" * MAX_LENGTH]


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "\r" not in text


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_in_one_line(name, tmp_path):
    with pytest.raises(UsageError) as error:
        check_name(name)
    assert one_line(str(error.value)) and "study name" in str(error.value)
    with pytest.raises(UsageError):
        inside(tmp_path, name, ".html")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", GOOD)
def test_good_names_stay_inside(name, tmp_path):
    assert inside(tmp_path, name) == tmp_path / name
    assert inside(tmp_path, name, ".html") == tmp_path / f"{name}.html"


@pytest.mark.parametrize("name", BAD + GOOD)
def test_the_config_uses_the_same_rule(name, tmp_path):
    try:
        check_name(name)
        valid = True
    except UsageError:
        valid = False
    try:
        parse_config(tiny_raw(tmp_path, study_name=name), "study.yaml")
        parsed = True
    except UsageError as exc:
        assert "study.yaml: study_name: " in str(exc) and one_line(str(exc))
        parsed = False
    assert parsed == valid


def test_a_symlink_planted_at_the_name_is_refused(tmp_path):
    root, outside = tmp_path / "exports", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "tiny").symlink_to(outside)
    with pytest.raises(UsageError, match="resolves outside"):
        inside(root, "tiny")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", ["search", "worker", "export", "report", "retrain"])
@pytest.mark.parametrize("name", ["../evil", "/tmp/abs", "x\ny", "a" * 300])
def test_flag_and_environment_refuse_before_storage(command, name, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "optuna.db"
    args = ["--config", "study.yaml"] if command == "retrain" else ["--storage", f"sqlite:///{db}"]
    with pytest.raises(SystemExit) as exit_:
        main([command, *args, "--study", name])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and one_line(err) and "study name" in err, err
    monkeypatch.setenv("SEARCH_STUDY", name)  # how make passes STUDY
    with pytest.raises(SystemExit):
        main([command])
    assert "study name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no database, no exports, no reports


@pytest.fixture
def hostile_storage(tiny_config, sqlite_url, tmp_path):
    """A storage where others created studies whose names are paths, next to a good one."""
    outside = tmp_path / "outside"
    names = ["../evil", str(outside / "abs"), "x\ny", "a" * 300, "-dash", "..", "x\x00y"]
    for name in names:
        optuna.create_study(study_name=name, storage=sqlite_url)
    study, _ = prepare_study(tiny_config, open_storage(sqlite_url, tiny_config.storage))
    add_trials(study, tiny_config, [0.5, 0.6])
    return sqlite_url, names


def test_report_skips_them_with_a_warning_and_writes_the_others(hostile_storage, tmp_path,
                                                                monkeypatch, capsys):
    url, names = hostile_storage
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = cli(capsys, "report", "--storage", url)
    assert code == 0
    warnings = err.strip().splitlines()
    assert len(warnings) == len(names)
    assert all(w.startswith("warning: report: skipping") for w in warnings)
    assert out.strip() == "wrote reports/tiny.html"
    files = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    written = [str(p) for p in files if not p.name.startswith("optuna.db")]
    assert sorted(written) == ["work/reports/plotly.min.js", "work/reports/tiny.html"]


@pytest.mark.parametrize("name", ["../evil", "x\ny", "a" * 300])
def test_export_and_retrain_refuse_them_in_one_line(name, hostile_storage, tmp_path,
                                                    monkeypatch, capsys):
    url, _ = hostile_storage
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="study name"):
        export(StorageOpener(url), name, root=tmp_path / "exports")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    with pytest.raises(UsageError, match="study name"):
        resolve_export(tmp_path / "study.yaml", name)
    for args in (["export", "--storage", url, "--study", name],
                 ["retrain", "--config", "study.yaml", "--study", name]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and one_line(err) and "study name" in err
    assert not (tmp_path / "exports").exists() and not (tmp_path / "evil").exists()


def test_an_export_naming_a_bad_study_is_refused(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"study_name": "../../evil", "trial": 1, "value": 0.5,
                                    "best_epoch": 2, "seed": 3, "config": {},
                                    "params": {"l1": 0.0, "l2": 0.001, "dropout": 0.5}}))
    with pytest.raises(UsageError, match=r"not an export \(study_name: '\.\./\.\./evil'"):
        read_export(path)


def test_names_from_a_config_reach_no_path(tmp_path, cifar_dir, capsys):
    raw = tiny_raw(tmp_path, study_name="../../evil")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    db = tmp_path / "optuna.db"
    code, _, err = cli(capsys, "search", "--config", str(tmp_path / "study.yaml"),
                       "--storage", f"sqlite:///{db}", "--data-dir", str(cifar_dir))
    assert code == 2 and one_line(err) and "study_name: '../../evil'" in err
    assert not db.exists() and not os.path.exists(tmp_path.parent / "evil")
