"""No command writes through a link planted where its files go; every JSON file is valid JSON."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import pytest

from search.base.errors import UsageError
from search.base.files import finite, folder_in, json_text, replacing, write_json, write_text
from search.interfaces.cli import main
from search.results.export import export
from search.results.report import PLOTLY_JS, write_reports
from search.testing import add_trials  # trials without training
from search.tuning.storage import StorageOpener, artifact_store, open_storage
from search.tuning.study import prepare_study

SECRET = "a file outside the tree, which no command may change\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside every folder the commands write; links planted in them point here."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def assert_replaced(path: Path, outside: Path) -> None:
    """The link at ``path`` was replaced by a file of its own; the file it pointed to is intact."""
    assert not path.is_symlink() and path.is_file()
    assert outside.read_text() == SECRET


@pytest.fixture
def study(tiny_config, sqlite_url):
    study, _ = prepare_study(tiny_config, open_storage(sqlite_url, tiny_config.storage))
    add_trials(study, tiny_config, [0.5, None, 0.75, 0.6])
    return study


@pytest.mark.parametrize("name", ["best.yaml", "best.json", "top.yaml", "top.json"])
def test_export_replaces_a_planted_link(study, sqlite_url, tmp_path, outside, name):
    link = plant(tmp_path / "exports" / "tiny" / name, outside)
    export(StorageOpener(sqlite_url), "tiny", top=3, root=tmp_path / "exports")
    assert_replaced(link, outside)
    assert link.read_text().startswith("{" if name.endswith(".json") else "study_name: tiny")


def test_report_replaces_a_planted_link_or_refuses_it(study, sqlite_url, tmp_path, outside):
    link = plant(tmp_path / "reports" / PLOTLY_JS, outside)
    write_reports(StorageOpener(sqlite_url), "tiny", root=tmp_path / "reports")
    assert_replaced(link, outside)
    (tmp_path / "reports" / "tiny.html").unlink()
    page = plant(tmp_path / "reports" / "tiny.html", outside)
    with pytest.raises(UsageError, match="resolves outside"):  # names.inside: a page's own rule
        write_reports(StorageOpener(sqlite_url), "tiny", root=tmp_path / "reports")
    assert page.is_symlink() and outside.read_text() == SECRET
    page.unlink()
    plant(page, tmp_path / "reports" / "other.html")  # a link inside the folder: replaced
    write_reports(StorageOpener(sqlite_url), "tiny", root=tmp_path / "reports")
    assert not page.is_symlink() and not (tmp_path / "reports" / "other.html").exists()


@pytest.mark.parametrize("command", ["export", "report"])
def test_a_linked_study_folder_is_refused_in_one_line(study, sqlite_url, tmp_path, outside, command,
                                                      capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if command == "export":
        plant(tmp_path / "exports" / "tiny", outside.parent)
    else:
        plant(tmp_path / "reports" / "deeper", outside.parent)  # a link beside is no matter
        (tmp_path / "reports" / "tiny.html").mkdir()  # a folder where the page goes: one line
    assert main([command, "--storage", sqlite_url, "--study", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in outside.parent.iterdir()) == ["precious.txt"]
    assert outside.read_text() == SECRET


def test_the_artifact_store_replaces_a_planted_link(tmp_path, outside):
    store = artifact_store(tmp_path / "artifacts")
    plant(tmp_path / "artifacts" / "some-id", outside)
    store.write("some-id", io.BytesIO(b"curves"))
    assert_replaced(tmp_path / "artifacts" / "some-id", outside)
    assert store.open_reader("some-id").read() == b"curves"
    for bad in ("../escape", "/abs", "..", ""):
        with pytest.raises(ValueError):
            store.write(bad, io.BytesIO(b"x"))


def test_writes_are_whole_and_leave_no_partial_file(tmp_path, outside):
    path = plant(tmp_path / "out" / "f.txt", outside)
    write_text(path, "new\n")
    assert_replaced(path, outside)
    assert path.read_text() == "new\n"
    with pytest.raises(RuntimeError), replacing(path) as partial:  # a writer that fails midway
        partial.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "new\n" and sorted(os.listdir(path.parent)) == ["f.txt"]


def test_a_folder_below_the_root_that_is_a_link_is_refused(tmp_path, outside):
    plant(tmp_path / "root" / "study", outside.parent)
    with pytest.raises(UsageError, match="a symbolic link, not a folder"):
        folder_in(tmp_path / "root", "study")
    linked_root = plant(tmp_path / "elsewhere", tmp_path / "root")  # a root a person linked is fine
    assert folder_in(linked_root, "other").is_dir()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_is_always_valid_json(tmp_path, value):
    document = {"loss": value, "history": {"loss": [0.5, value]}, "runs": ({"x": value},)}
    write_json(tmp_path / "m.json", document)
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=pytest.fail) == finite(document)
    assert json.loads(json_text(document)) == {"loss": None, "history": {"loss": [0.5, None]},
                                               "runs": [{"x": None}]}


@pytest.mark.parametrize("obstacle", ["folder", "fifo", "hard link"])
def test_whatever_is_in_the_way_is_replaced_or_refused_in_one_line(study, sqlite_url, tmp_path, outside,
                                                                  obstacle, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "exports" / "tiny" / "best.json"
    target.parent.mkdir(parents=True)
    if obstacle == "folder":
        target.mkdir()
        assert main(["export", "--storage", sqlite_url, "--study", "tiny"]) == 2
        err = capsys.readouterr().err
        assert err == "error: exports/tiny/best.json: cannot write (Is a directory)\n"
        return
    if obstacle == "fifo":
        os.mkfifo(target)  # opening it to write would wait for a reader forever
    else:
        os.link(outside, target)  # the same file as one outside: writing in place would change it
    assert main(["export", "--storage", sqlite_url, "--study", "tiny"]) == 0
    assert target.is_file() and json.loads(target.read_text())["study_name"] == "tiny"
    assert outside.read_text() == SECRET
