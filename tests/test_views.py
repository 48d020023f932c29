"""What a person sees agrees everywhere: the values the model used, one best, confirmation
studies as tables of runs, rounded numbers, the baseline marked (issue 17).

Studies here are written directly (``study.add_trial``) on a real recorded definition, so the
views are checked by value without training; ``test_a_search_shows_what_it_stored`` trains.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from optuna_dashboard import get_note, save_note

from search.base.config import parse_config, shown_params, trial_label
from search.base.names import CONFIRMS, companion_name
from search.base.stats import gain
from search.interfaces.cli import build_parser
from search.results.confirm import companion_config, confirm_seed, planned_runs
from search.results.export import export
from search.results.report import render
from search.results.retrain import run_label
from search.running.progress import describe_trial as describe
from search.running.runner import SearchRequest, ran_line, run_search
from search.running.workers import Budget
from search.testing import REPO, tiny_raw
from search.tuning.artifacts import save_study_curves, study_curves, trial_note
from search.tuning.compare import SEARCH_BEST, SEARCH_RANKING, outcome_lines
from search.tuning.notes import save_study_note
from search.tuning.objective import EpochPruningCallback, suggest
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study

ON = CategoricalDistribution([True, False])
STRENGTH = FloatDistribution(1e-6, 1e-2, log=True)
OLD_STRENGTH = FloatDistribution(1e-7, 1e-2, log=True)
DROPOUT = FloatDistribution(0.0, 0.7)
BASE_POINT = {"l1": 0.0, "l2": 0.001, "dropout": 0.5}


def _trial(values: list[float], params: dict, user_attrs: dict) -> optuna.trial.FrozenTrial:
    """A complete trial with its per-epoch values (steps from 1) and the best as its value."""
    distributions = {
        name: ON if name.endswith("_on") else DROPOUT if name == "dropout" else STRENGTH
        for name in params
    }
    return create_trial(
        state=TrialState.COMPLETE, value=max(values), params=params, distributions=distributions,
        user_attrs={"epochs_run": len(values), "best_epoch": values.index(max(values)) + 1, **user_attrs},
        intermediate_values=dict(enumerate(values, 1)),
    )


def make_study(url: str, tmp_path: Path) -> optuna.Study:
    """``views``: the baseline (trial 0, 0.3850) and three trials; trial 2 is best by search."""
    config = parse_config(tiny_raw(tmp_path, study_name="views"), "tiny")
    study, _ = prepare_study(config, open_storage(url), data={"images": "synthetic"})
    study.tell(study.ask(), state=TrialState.FAIL)  # the queued baseline, run below as trial 1
    study.add_trial(_trial([0.3410, 0.3850], {"l1_on": False, "l2_on": True, "l2": 0.001, "dropout": 0.5},
                           {"baseline": True, "seed": 11, "effective_params": BASE_POINT}))
    study.add_trial(_trial([0.3600, 0.4190], {"l1_on": True, "l1": 2e-5, "l2_on": False, "dropout": 0.3},
                           {"seed": 12}))
    study.add_trial(_trial([0.3500, 0.4150], {"l1_on": False, "l2_on": True, "l2": 3e-4, "dropout": 0.2},
                           {"seed": 13}))
    return study


def make_confirmations(url: str, study: optuna.Study) -> optuna.Study:
    """Three runs each of the baseline (trial 1) and trials 3 and 2: trial 3 has the best mean."""
    companion = optuna.create_study(study_name=companion_name(study.study_name), storage=url,
                                    direction="maximize")
    companion.set_user_attr(CONFIRMS, study.study_name)
    figures = {1: [0.3840, 0.3870, 0.3810], 3: [0.4120, 0.4100, 0.4140], 2: [0.4010, 0.3990, 0.4060]}
    for source, values in figures.items():
        trial = study.trials[source]
        for i, value in enumerate(values):
            attrs = {"source_trial": source, "seed_index": i, "seeds": 3, "baseline": source == 1,
                     "seed": confirm_seed(1, "baseline" if source == 1 else source, i)}
            companion.add_trial(_trial([value - 0.05, value], dict(trial.params), attrs))
    return companion


@pytest.fixture
def study(sqlite_url, tmp_path) -> optuna.Study:
    return make_study(sqlite_url, tmp_path)


# 1. The values the model used, everywhere


def test_an_off_penalty_is_stored_as_off_and_sampled_only_when_on(tiny_config, sqlite_url):
    study, _ = prepare_study(tiny_config, open_storage(sqlite_url))
    baseline = study.ask()  # the queued baseline
    assert suggest(baseline, tiny_config.search_space) == BASE_POINT
    assert baseline.params == {"l1_on": False, "l2_on": True, "l2": 0.001, "dropout": 0.5}
    for _ in range(20):
        trial = study.ask()
        used = suggest(trial, tiny_config.search_space)
        for name in ("l1", "l2"):
            assert (name in trial.params) is trial.params[f"{name}_on"]  # a strength only when on
            assert used[name] == (trial.params[name] if trial.params[f"{name}_on"] else 0.0)
            assert used[name] == 0.0 or used[name] >= tiny_config.search_space.l1.off_below


def test_every_view_shows_an_off_penalty_as_off(study, sqlite_url, tmp_path, monkeypatch):
    base = study.trials[1]
    assert shown_params(base) == "l1 off, l2 0.001, dropout 0.5"
    assert describe(base).startswith("trial 1 (baseline) COMPLETE l1=off l2=1.00e-03 dropout=0.50 "
                                     "val_accuracy=0.3850 epochs=2")
    assert "l1=2.00e-05 l2=off dropout=0.30" in describe(study.trials[2])
    assert "l1 off" in outcome_lines(study)[0]
    (best,) = export(StorageOpener(sqlite_url), "views", root=tmp_path / "exports")[1:2]  # best.json
    document = json.loads(best.read_text())
    assert document["params"] == {"l1": 2e-5, "l2": 0.0, "dropout": 0.3}
    assert document["baseline"]["params"] == BASE_POINT
    assert document["baseline"]["sampled"] == {"l1_on": False, "l2_on": True, "l2": 0.001, "dropout": 0.5}
    page = render(study, open_storage(sqlite_url))
    row = re.search(r"<tr><td>3</td><td>trial 1 \(baseline\)</td>.*?</tr>", page)[0]
    assert "<td>off</td><td>0.001</td><td>0.5</td>" in row
    assert "1e-07" not in page and "1e-7" not in page
    hover = study_curves(study.trials[1:])["data"][0]["hovertemplate"]
    assert hover.startswith("trial 1 (baseline) (l1 off, l2 0.001, dropout 0.5)")


def test_a_study_of_the_old_encoding_still_reads_as_off(sqlite_url, tmp_path):
    """Before the on/off parameters, l1 1e-07 (below off_below) meant off (``effective_params``)."""
    config = parse_config(tiny_raw(tmp_path, study_name="old"), "tiny")
    study, _ = prepare_study(config, open_storage(sqlite_url))
    study.tell(study.ask(), state=TrialState.FAIL)
    old = {"l1": OLD_STRENGTH, "l2": OLD_STRENGTH, "dropout": DROPOUT}
    for value, params, effective in (
        (0.3850, {"l1": 1e-7, "l2": 0.001, "dropout": 0.5}, BASE_POINT),
        (0.4000, {"l1": 3e-7, "l2": 2e-4, "dropout": 0.1}, {"l1": 0.0, "l2": 2e-4, "dropout": 0.1}),
    ):
        study.add_trial(create_trial(value=value, params=params, distributions=old,
                                     user_attrs={"effective_params": effective, "baseline": value < 0.39}))
    base, other = study.trials[1], study.trials[2]
    assert "l1=off l2=1.00e-03" in describe(base) and "l1=off l2=2.00e-04" in describe(other)
    assert shown_params(other) == "l1 off, l2 0.0002, dropout 0.1"
    runs = planned_runs(study, config, top=1, seeds=1)  # confirmed in the new encoding
    assert [params for params, _ in runs] == [
        {"l1_on": False, "l2_on": True, "l2": 0.001, "dropout": 0.5},
        {"l1_on": False, "l2_on": True, "l2": 2e-4, "dropout": 0.1},
    ]
    tables = render(study, open_storage(sqlite_url)).split("<h2>Optimization history")[0]
    assert "<td>off</td><td>0.0002</td>" in tables and "3e-07" not in tables  # the plots show storage


# 2. One best


def test_before_confirmation_every_view_says_best_by_search(study, sqlite_url, tmp_path):
    storage = open_storage(sqlite_url)
    lines = outcome_lines(study, storage)
    assert lines == [
        "baseline: trial 1 (baseline), val_accuracy 0.3850 (l1 off, l2 0.001, dropout 0.5)",
        f"{SEARCH_BEST}: trial 2, val_accuracy 0.4190 (l1 2e-05, l2 off, dropout 0.3); "
        "+0.0340 over the baseline",
    ]
    best = yaml.safe_load(export(StorageOpener(sqlite_url), "views", root=tmp_path)[0].read_text())
    assert (best["trial"], best["best_by"], best["gain"]["mean"]) == (2, SEARCH_BEST, 0.034)
    page = render(study, storage)
    assert f"<td>{SEARCH_BEST}</td><td>trial 2</td><td>0.4190</td>" in page
    save_study_note(study, parse_config(study.user_attrs["config"], "stored"), storage)
    assert lines[1] in get_note(study)


def test_after_confirmation_every_view_names_the_same_best_and_gain(study, sqlite_url, tmp_path):
    storage = open_storage(sqlite_url)
    make_confirmations(sqlite_url, study)
    expected = gain([0.4120, 0.4100, 0.4140], [0.3840, 0.3870, 0.3810])
    best_line = (f"best (confirmed): search trial 3, 0.4120 ± 0.0020 (3 runs); gain +0.0280 "
                 f"(95% CI {expected['low']:+.4f} to {expected['high']:+.4f}) over the baseline")
    lines = outcome_lines(study, storage)
    assert best_line in lines
    assert lines[-1] == (f"{SEARCH_RANKING}: trial 2 0.4190, trial 3 0.4150, "
                         "trial 1 (baseline) 0.3850")
    assert not any(line.startswith(SEARCH_BEST) for line in lines)
    best = json.loads(export(StorageOpener(sqlite_url), "views", top=3, root=tmp_path)[1].read_text())
    assert (best["trial"], best["confirmed"], best["gain"]["mean"]) == (3, True, 0.028)
    assert (best["gain"]["low"], best["gain"]["high"]) == (round(expected["low"], 4), round(expected["high"], 4))
    assert [t["trial"] for t in best["confirmation"][SEARCH_RANKING]] == [2, 3, 1]
    top = yaml.safe_load((tmp_path / "views" / "top.yaml").read_text())
    assert top["ranked_by"].startswith("confirmed configurations") and top["trials"][0]["trial"] == 3
    page = render(study, storage)
    assert "<td>best (confirmed)</td><td>trial 3</td>" in page and SEARCH_BEST not in page
    assert "<h2>Search ranking (one run each, unconfirmed)</h2>" in page
    assert best_line in page.replace("&#x27;", "'")
    save_study_note(study, parse_config(study.user_attrs["config"], "stored"), storage)
    assert best_line in get_note(study)


def test_confirmation_runs_are_labelled_with_their_search_trial(study, sqlite_url):
    companion = make_confirmations(sqlite_url, study)
    run = companion.trials[4]
    assert trial_label(run) == "confirmation run 4 (search trial 3, seed 2 of 3)"
    assert describe(companion.trials[0]).startswith(
        "confirmation run 0 (baseline, search trial 1, seed 1 of 3) COMPLETE l1=off")


# 3. Confirmation studies look like what they are


def test_a_confirmation_study_is_a_table_of_runs(study, sqlite_url):
    storage = open_storage(sqlite_url)
    companion = make_confirmations(sqlite_url, study)
    page = render(companion, storage)
    assert "<h2>Configurations</h2>" in page and "There is no best trial here" in page
    assert ("<tr><td>search trial 3</td><td>3</td>" in page
            and "<td>0.4120 ± 0.0020 (3 runs)</td><td>+0.0280 (95% CI" in page)
    assert "<td>baseline (search trial 1)</td><td>3</td>" in page and "(the baseline)" in page
    for absent in ("Optimization history", "importances", "Slices", "best value"):
        assert absent not in page
    config = companion_config(parse_config(study.user_attrs["config"], "stored"))
    save_study_note(companion, config, storage)
    note = get_note(companion)
    assert "| search trial 3 | 3 |" in note and "| 0.4120 ± 0.0020 (3 runs) | +0.0280 (95% CI" in note
    assert "there is no best trial here" in note


# 4. Numbers a person reads


def test_values_reach_optuna_rounded(sqlite_url):
    study = optuna.create_study(storage=sqlite_url, direction="maximize")
    trial = study.ask()
    callback = EpochPruningCallback(trial, "val_accuracy")
    callback.on_epoch_end(0, {"val_accuracy": np.float32(0.419)})
    assert float(np.float32(0.419)) == 0.4189999997615814
    assert study.trials[0].intermediate_values == {1: 0.419}


def test_json_has_no_float32_noise(study, sqlite_url, tmp_path):
    make_confirmations(sqlite_url, study)
    text = export(StorageOpener(sqlite_url), "views", root=tmp_path)[1].read_text()
    numbers = re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)
    assert numbers and all(len(n.split(".")[1]) <= 6 or "e" in n for n in numbers), numbers


# 5. The baseline marked


def test_the_baseline_curve_is_dashed_and_named(study):
    traces = study_curves(study.trials[1:])["data"]
    assert (traces[0]["name"], traces[0]["line"]["dash"]) == ("trial 1 (baseline)", "dash")
    assert traces[1]["name"] == "trial 2" and traces[1]["line"]["dash"] is None


# 6. The rest


def test_a_budget_that_ends_before_any_trial_says_so_in_one_sentence(tiny_config, sqlite_url, cifar_dir,
                                                                     capsys):
    run_search(SearchRequest(tiny_config, 3, StorageOpener(sqlite_url), data_dir=str(cifar_dir), timeout=1e-09))
    out = capsys.readouterr().out
    assert "ran no trials: the time budget (1e-09 min) ended before the first one started\n" in out
    assert "ended the search" not in out and not re.search(r": *$", out, re.M)


def test_ran_line_counts_states():
    assert ran_line([], 6.0, False, None) == "ran no trials in 0.1 min"
    budget = Budget(1, 60)
    assert ran_line([], 6.0, True, budget) == "ran no confirmation runs in 0.1 min"


def test_help_is_plain_text():
    text = build_parser().format_help()
    assert "``" not in text and "python -m search {search,worker,...}" in text


def test_retrain_labels_each_run():
    assert run_label("chosen", 7, 1, 3) == "chosen (search trial 7), seed 2 of 3"
    assert run_label("baseline", None, 0, 1) == "baseline, seed 1 of 1"


def test_a_search_shows_what_it_stored(tmp_path, cifar_dir):
    """The command line: no Optuna INFO line, the baseline's line says off, values rounded."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    raw = tiny_raw(tmp_path, study_name="shown", training={"epochs": 1, "batch_size": 50})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-m", "search", "search", "--config", str(config), "--storage", url,
         "--trials", "2", "--workers", "1", "--data-dir", str(cifar_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[I " not in done.stdout + done.stderr and "A new study created" not in done.stderr
    assert re.search(r"^trial 0 \(baseline\) COMPLETE l1=off l2=1\.00e-03 dropout=0\.50 ", done.stdout, re.M)
    assert f"{SEARCH_BEST}: " in done.stdout
    study = optuna.load_study(study_name="shown", storage=url)
    assert "l1" not in study.trials[0].params and study.trials[0].params["l1_on"] is False
    for trial in study.trials:
        assert trial.value == round(trial.value, 4)
        assert all(v == round(v, 4) for v in trial.intermediate_values.values())


# The dashboard in headless Chromium: the baseline marked, the rounded best value, a
# confirmation study without a best trial, a refused write answered in the page.


@pytest.fixture
def studies(tmp_path, chromium):
    """The ``views`` study (baseline trial 1, best by search trial 2 at 0.419) and its
    confirmations: storage URL, artifact folder, study ids."""
    url = f"sqlite:///{tmp_path / 'views.db'}"
    study = make_study(url, tmp_path)
    rdb = open_storage(url).rdb
    study_id = rdb.get_study_id_from_name(study.study_name)
    for number in (1, 2):
        trial = optuna.Trial(study, rdb.get_trial_id_from_study_id_trial_number(study_id, number))
        save_note(trial, trial_note(trial, "/none.png"))
    save_study_curves(study, rdb)
    companion = make_confirmations(url, study)
    config = companion_config(parse_config(study.user_attrs["config"], "stored"))
    save_study_note(companion, config, open_storage(url))
    (tmp_path / "artifacts").mkdir()
    return url, tmp_path / "artifacts", study_id, rdb.get_study_id_from_name(companion.study_name)


def test_the_study_page_shows_the_rounded_best_and_the_baseline(studies, start_dashboard, page):
    from playwright.sync_api import expect

    url, artifacts, study_id, _ = studies
    base = start_dashboard(url, artifacts)
    page.goto(f"{base}/dashboard/studies/{study_id}")
    expect(page.get_by_text("Best Trial (number=2)")).to_be_visible()
    expect(page.get_by_text("0.419", exact=True)).to_be_visible()
    curves = page.locator('[id="user-defined-plot:validation-curves"]')
    expect(curves).to_contain_text("trial 1 (baseline)")  # the legend names the dashed line

    page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers=1")
    expect(page.get_by_text("Baseline", exact=True)).to_be_visible()  # the trial's note says so
    expect(page.get_by_text("the study's reference point")).to_be_visible()
    expect(page.get_by_text("l1_on False", exact=True)).to_be_visible()  # stored as off
    expect(page.get_by_text("baseline True", exact=True)).to_be_visible()  # a user attr
    expect(page.get_by_text("l1 0.0000001")).to_have_count(0)


def test_a_confirmation_study_shows_no_best_trial(studies, start_dashboard, page):
    from playwright.sync_api import expect

    url, artifacts, study_id, companion_id = studies
    base = start_dashboard(url, artifacts)
    with urllib.request.urlopen(f"{base}/api/studies/{companion_id}") as answer:
        assert json.load(answer)["best_trials"] == []
    with urllib.request.urlopen(f"{base}/api/studies/{study_id}") as answer:  # a search keeps its own
        assert [t["number"] for t in json.load(answer)["best_trials"]] == [2]
    page.goto(f"{base}/dashboard/studies/{companion_id}")
    expect(page.get_by_text("Study User Attributes")).to_be_visible()  # the page is drawn
    expect(page.get_by_text("Best Trial (number=")).to_have_count(0)
    page.goto(f"{base}/dashboard/studies/{companion_id}/note")
    expect(page.get_by_text("there is no best trial here", exact=False)).to_be_visible()
    expect(page.get_by_role("cell", name="search trial 3", exact=True)).to_be_visible()


def test_a_delete_click_on_a_read_only_dashboard_says_how_to_allow_it(studies, start_dashboard, page):
    from playwright.sync_api import expect

    url, artifacts, _, _ = studies
    page.goto(f"{start_dashboard(url, artifacts)}/dashboard")
    notice = page.locator("#read-only-notice")
    expect(notice).to_contain_text("read-only: start with ALLOW_WRITES=1")
    page.get_by_role("button", name="delete study").first.click()
    page.get_by_role("dialog", name="Delete study").get_by_role("button", name="Yes").click()
    expect(page.get_by_role("alert").filter(has_text="Refused: read-only: start with ALLOW_WRITES=1")).to_be_visible()
    assert sorted(optuna.get_all_study_names(url)) == ["views", "views.confirm"]


def test_a_writable_dashboard_has_no_read_only_notice(studies, start_dashboard, page):
    from playwright.sync_api import expect

    url, artifacts, _, _ = studies
    page.goto(f"{start_dashboard(url, artifacts, '--allow-writes')}/dashboard")
    expect(page.get_by_text("views.confirm")).to_be_visible()
    expect(page.locator("#read-only-notice")).to_have_count(0)
    assert open_storage(url)  # nothing was changed by looking


def test_confirmation_pages_answer_every_spelling_of_the_study_api():
    """A trailing slash (bottle strips it) or a study id of no study: no way around, no crash."""
    from search.interfaces.dashboard_views import ConfirmationPages

    class Storage:
        def get_study_user_attrs(self, study_id: int) -> dict:
            if study_id == 9:
                raise KeyError(study_id)
            return {"confirms": "search"} if study_id == 2 else {}

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"best_trials": [{"number": 1}]}).encode()]

    pages = ConfirmationPages(app, Storage())

    def get(path: str) -> dict:
        return json.loads(b"".join(pages({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda *a: None)))

    assert get("/api/studies/2") == get("/api/studies/2/") == {"best_trials": []}
    assert get("/api/studies/2/param_importances") == {"param_importances": [[]]}
    assert get("/api/studies/1") == get("/api/studies/9") == {"best_trials": [{"number": 1}]}
