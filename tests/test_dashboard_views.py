"""optuna-dashboard in headless Chromium: the baseline marked, the rounded best value, a
confirmation study without a best trial, and a refused write answered in the page (issue 17)."""

from __future__ import annotations

import json
import urllib.request

import optuna
import pytest
from optuna_dashboard import save_note

from search.base.config import parse_config
from search.results.confirm import companion_config
from search.results.notes import save_study_note
from search.tuning.artifacts import save_study_curves, trial_note
from search.tuning.storage import open_storage
from tests.test_dashboard import SCREENSHOTS, chromium, page, start_dashboard  # noqa: F401 (fixtures)
from tests.test_views import make_confirmations, make_study


@pytest.fixture
def studies(tmp_path, chromium):  # noqa: F811
    """The ``views`` study (baseline trial 1, best by search trial 2 at 0.419) and its
    confirmations: storage URL, artifact folder, study ids."""
    url = f"sqlite:///{tmp_path / 'views.db'}"
    study = make_study(url, tmp_path)
    for number in (1, 2):
        save_note(optuna.Trial(study, study.trials[number]._trial_id),
                  trial_note(optuna.Trial(study, study.trials[number]._trial_id), "/none.png"))
    save_study_curves(study)
    companion = make_confirmations(url, study)
    config = companion_config(parse_config(study.user_attrs["config"], "stored"))
    save_study_note(companion, config, open_storage(url))
    (tmp_path / "artifacts").mkdir()
    return url, tmp_path / "artifacts", study._study_id, companion._study_id


def test_the_study_page_shows_the_rounded_best_and_the_baseline(studies, start_dashboard, page):  # noqa: F811
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


def test_a_confirmation_study_shows_no_best_trial(studies, start_dashboard, page):  # noqa: F811
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


def test_a_delete_click_on_a_read_only_dashboard_says_how_to_allow_it(studies, start_dashboard, page):  # noqa: F811
    from playwright.sync_api import expect

    url, artifacts, _, _ = studies
    page.goto(f"{start_dashboard(url, artifacts)}/dashboard")
    notice = page.locator("#read-only-notice")
    expect(notice).to_contain_text("read-only: start with ALLOW_WRITES=1")
    page.get_by_role("button", name="delete study").first.click()
    page.get_by_role("dialog", name="Delete study").get_by_role("button", name="Yes").click()
    expect(page.get_by_role("alert").filter(has_text="Refused: read-only: start with ALLOW_WRITES=1")).to_be_visible()
    assert sorted(optuna.get_all_study_names(url)) == ["views", "views.confirm"]


def test_a_writable_dashboard_has_no_read_only_notice(studies, start_dashboard, page):  # noqa: F811
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
