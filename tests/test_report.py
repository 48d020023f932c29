"""``report``: one HTML page per study with the plots and the top trials, sharing plotly.js."""

from __future__ import annotations

import html
import os
import re

import pytest
from plotly.offline import get_plotlyjs

from search.base.errors import UsageError
from search.interfaces.cli import main
from search.results.report import (
    MIN_TRIALS_FOR_IMPORTANCES,
    PLOTLY_JS,
    PLOTS,
    write_reports,
)
from search.testing import add_trials
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study


@pytest.fixture
def storage(tiny_config, sqlite_url):
    return open_storage(sqlite_url, tiny_config.storage)


def test_page_has_every_plot_and_the_top_trials(tiny_config, storage, sqlite_url, tmp_path):
    values = [0.5, 0.6, None, 0.8, 0.55, 0.7, 0.65]
    add_trials(prepare_study(tiny_config, storage)[0], tiny_config, values)
    (path,) = write_reports(StorageOpener(sqlite_url), "tiny", top=3, root=tmp_path)
    assert path == tmp_path / "tiny.html"
    page = path.read_text()
    assert page.count('class="plotly-graph-div"') == len(PLOTS) == 5
    for title in PLOTS:
        assert page.count(f"<h2>{html.escape(title)}</h2>") == 1
    assert "Optimization History Plot" not in page  # one title per plot: the heading
    # the validation curves: axes named, one line per finished trial with values, named
    assert '"title":{"text":"epoch"}' in page and '"title":{"text":"validation accuracy"}' in page
    named = re.findall(r'"name":"trial (\d+)( \(baseline\))?"', page)
    assert named[0] == ("0", " (baseline)")  # the baseline's line says so
    named = [number for number, _ in named]
    assert named == [str(n) for n, v in enumerate(values) if v is not None]
    rows = re.findall(r"<tr><td>(\d+)</td><td>trial (\d+)</td><td>([\d.]+)</td>", page)
    assert rows == [("1", "3", "0.8000"), ("2", "5", "0.7000"), ("3", "6", "0.6500")]


def test_plotlyjs_written_once_beside_the_pages(tiny_config, storage, sqlite_url, tmp_path):
    add_trials(prepare_study(tiny_config, storage, "first")[0], tiny_config, [0.5])
    add_trials(prepare_study(tiny_config, storage, "second")[0], tiny_config, [0.6])
    root = tmp_path / "reports"
    root.mkdir()
    stale = root / PLOTLY_JS
    stale.write_text("/* an older plotly.js */")
    pages = [p.read_text() for p in write_reports(StorageOpener(sqlite_url), root=root)]
    assert stale.read_text() == get_plotlyjs()  # replaced: it differed
    for page in pages:
        assert page.count(f'<script src="{PLOTLY_JS}"></script>') == 1  # relative: opens from disk
        assert "<script src=" not in page.replace(f'<script src="{PLOTLY_JS}">', "")
        assert get_plotlyjs()[:200] not in page and len(page) < 200_000  # no inlined copy
    os.utime(stale, ns=(0, 0))
    write_reports(StorageOpener(sqlite_url), "first", root=root)
    assert stale.stat().st_mtime_ns == 0  # the same file: left alone
    assert sorted(p.name for p in root.iterdir()) == ["first.html", PLOTLY_JS, "second.html"]


def test_too_few_trials_for_importances(tiny_config, storage, sqlite_url, tmp_path):
    add_trials(prepare_study(tiny_config, storage)[0], tiny_config, [0.5])
    page = write_reports(StorageOpener(sqlite_url), "tiny", root=tmp_path)[0].read_text()
    assert "Not enough complete trials to rank the hyperparameters" in page
    assert f"at least {MIN_TRIALS_FOR_IMPORTANCES}" in page
    assert page.count('class="plotly-graph-div"') == len(PLOTS) - 1


def test_every_study_by_default(tiny_config, storage, sqlite_url, tmp_path):
    prepare_study(tiny_config, storage, "first")
    prepare_study(tiny_config, storage, "second")  # no trials at all: still a page
    paths = write_reports(StorageOpener(sqlite_url), root=tmp_path)
    assert sorted(p.name for p in paths) == ["first.html", "second.html"]
    empty = (tmp_path / "second.html").read_text()
    assert "No complete trial yet" in empty and "plotly-graph-div" not in empty


def test_unknown_study_and_empty_storage(storage, sqlite_url, tmp_path):
    with pytest.raises(UsageError, match="no studies"):
        write_reports(StorageOpener(sqlite_url), root=tmp_path)
    with pytest.raises(UsageError, match="no study named 'nope'"):
        write_reports(StorageOpener(sqlite_url), "nope", root=tmp_path)
    assert not tmp_path.joinpath("nope.html").exists()


def test_cli(tiny_config, storage, sqlite_url, tmp_path, capsys, monkeypatch):
    add_trials(prepare_study(tiny_config, storage)[0], tiny_config, [0.5, 0.6])
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--storage", sqlite_url]) == 0
    assert capsys.readouterr().out.strip() == "wrote reports/tiny.html"
    assert main(["report", "--storage", sqlite_url, "--study", "nope"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: no study named 'nope' in {sqlite_url}: it holds 'tiny'; "
        "pick one with STUDY=..., e.g. make report STUDY=tiny"
    )


def test_unwritable_reports_folder(tiny_config, storage, sqlite_url, tmp_path):
    add_trials(prepare_study(tiny_config, storage)[0], tiny_config, [0.5])
    (tmp_path / PLOTLY_JS).mkdir()  # something in the way
    with pytest.raises(UsageError, match=rf"{re.escape(str(tmp_path / PLOTLY_JS))}: cannot write \(Is a directory\)"):
        write_reports(StorageOpener(sqlite_url), "tiny", root=tmp_path)
    assert not list(tmp_path.glob("*.html")) and not list(tmp_path.glob(".plotly*"))
