"""What a trial leaves for the reader: its curves (PNG, in its dashboard note), its history, and
the study's validation curves as a Plotly figure in optuna-dashboard."""

from __future__ import annotations

import json
import logging
import math

import matplotlib.figure
import optuna
import optuna_dashboard
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from optuna_dashboard import get_note
from PIL import Image

from search.base.config import parse_config
from search.running.runner import SearchRequest, run_search
from search.testing import tiny_raw
from search.tuning import artifacts
from search.tuning._optuna_private import stored_graph_object
from search.tuning.artifacts import STUDY_CURVES_ID, TrialArtifacts, plot_curves
from search.tuning.storage import StorageOpener

HISTORY = {
    "accuracy": [0.3, 0.5, 0.6, 0.7],
    "val_accuracy": [0.35, float("nan"), 0.55, 0.5],  # best at epoch 3, a NaN in between
    "loss": [2.0, 1.5, 1.2, 1.0],
    "val_loss": [1.9, 1.6, 1.4, 1.5],
}
SPACE = {name: FloatDistribution(1e-6, 0.9) for name in ("l1", "l2", "dropout")}


def ids(url: str, study: optuna.Study, number: int) -> tuple[int, int]:
    """The storage's ids of the study and its trial ``number``, as the dashboard's URLs use them."""
    storage = optuna.storages.get_storage(url)
    study_id = storage.get_study_id_from_name(study.study_name)
    return study_id, storage.get_trial_id_from_study_id_trial_number(study_id, number)


def uploaded(url: str, study: optuna.Study, number: int) -> dict:
    """The trial's artifacts by mimetype."""
    metas = get_all_artifact_meta(study.trials[number], storage=optuna.storages.get_storage(url))
    return {meta.mimetype: meta for meta in metas}


def note(url: str, study: optuna.Study, number: int) -> str:
    return get_note(optuna.Trial(study, ids(url, study, number)[1]))


def stored_figure(url: str, study: optuna.Study) -> dict:
    storage = optuna.storages.get_storage(url)
    study_id = storage.get_study_id_from_name(study.study_name)
    return json.loads(stored_graph_object(storage, study_id, STUDY_CURVES_ID))


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures ``plot_curves`` saves, to read their titles and lines."""
    figures = []
    save = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    return figures


def test_curves_png_is_large_titled_and_marks_the_best_epoch(tmp_path, drawn):
    path = tmp_path / "curves.png"
    plot_curves(HISTORY, path, "trial 7: l1=0.001, l2=2e-05, dropout=0.3")
    with Image.open(path) as png:
        assert png.width >= 1200 and png.height >= 450  # was 800 x 320, a thumbnail's worth
    (fig,) = drawn
    assert fig.get_suptitle() == "trial 7: l1=0.001, l2=2e-05, dropout=0.3"
    accuracy, loss = fig.axes
    assert "L1/L2 penalty" in loss.get_title()
    for ax in (accuracy, loss):
        assert ax.get_xlabel() == "epoch"
        assert all(tick == int(tick) for tick in ax.get_xticks())
        best = [line for line in ax.get_lines() if line.get_label() == "best epoch (3)"]
        assert len(best) == 1 and list(best[0].get_xdata()) == [3, 3]


def test_trial_artifacts_note_and_study_figure(tmp_path, sqlite_url, drawn):
    study = optuna.create_study(study_name="hand", storage=sqlite_url, direction="maximize")
    done = study.ask(SPACE)
    done.report(0.4, 0)
    study.tell(done, 0.4)
    study.ask(SPACE).report(0.9, 0)  # another worker's trial, still running: not shown
    trial = study.ask(SPACE)
    for step, value in enumerate(HISTORY["val_accuracy"]):
        trial.report(value, step)

    TrialArtifacts(str(tmp_path / "artifacts"))(trial, HISTORY)

    expected = ", ".join(f"{n} {trial.params[n]:.3g}" for n in ("l1", "l2", "dropout"))  # none is 0
    assert drawn[0].get_suptitle() == f"trial 2: {expected}"
    files = uploaded(sqlite_url, study, 2)
    png = files["image/png"]
    assert png.filename == "learning_curves.png"
    assert files["application/json"].filename == "history.json"
    study_id, trial_id = ids(sqlite_url, study, 2)
    url = f"/artifacts/{study_id}/{trial_id}/{png.artifact_id}"  # the dashboard's
    assert note(sqlite_url, study, 2) == f"**trial 2**: {expected}\n\n![learning curves of trial 2]({url})\n"
    figure = stored_figure(sqlite_url, study)
    assert [t["name"] for t in figure["data"]] == ["trial 0", "trial 2"]
    assert expected in figure["data"][1]["hovertemplate"]
    assert figure["layout"]["xaxis"]["title"]["text"] == "epoch"
    assert figure["layout"]["yaxis"]["title"]["text"] == "validation accuracy"


def test_a_dashboard_failure_never_fails_the_trial(tmp_path, sqlite_url, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "save_study_curves", broken)
    study = optuna.create_study(storage=sqlite_url)
    trial = study.ask(SPACE)
    with caplog.at_level(logging.WARNING, logger="search.tuning.artifacts"):
        TrialArtifacts(str(tmp_path / "artifacts"))(trial, HISTORY)
    assert "trial 0: dashboard curves not saved (OSError('disk full'))" in caplog.text
    assert len(uploaded(sqlite_url, study, 0)) == 2  # the trial's own artifacts are there


def test_an_interleaved_write_is_repaired(sqlite_url, monkeypatch):
    """Two workers writing the chunked figure at once can leave a mix: it is written again."""
    save, calls = optuna_dashboard.save_plotly_graph_object, []

    def racing(study, figure, graph_object_id):
        save(study, figure, graph_object_id=graph_object_id)
        calls.append(graph_object_id)
        if len(calls) == 1:  # another worker's chunk lands in the middle of ours
            key = f"dashboard:plot_data:{graph_object_id}:0"
            storage = optuna.storages.get_storage(sqlite_url)
            storage.set_study_system_attr(storage.get_study_id_from_name(study.study_name), key, '{"data": [')

    monkeypatch.setattr(optuna_dashboard, "save_plotly_graph_object", racing)
    study = optuna.create_study(storage=sqlite_url)
    trial = study.ask(SPACE)
    trial.report(0.5, 0)
    study.tell(trial, 0.5)
    artifacts.save_study_curves(study, optuna.storages.get_storage(sqlite_url))
    assert len(calls) == 2
    assert [t["name"] for t in stored_figure(sqlite_url, study)["data"]] == ["trial 0"]


def test_a_search_saves_the_study_curves_and_each_trial_note(tmp_path, cifar_dir, sqlite_url):
    raw = tiny_raw(tmp_path, training={"epochs": 2, "batch_size": 50})
    run_search(SearchRequest(parse_config(raw, 'tiny'), 3, StorageOpener(sqlite_url), data_dir=str(cifar_dir)))
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    figure = stored_figure(sqlite_url, study)
    assert [t["name"] for t in figure["data"]] == ["trial 0 (baseline)", "trial 1", "trial 2"]
    assert figure["data"][0]["line"]["dash"] == "dash"  # the baseline stands apart
    assert note(sqlite_url, study, 0).startswith("**Baseline**: ")
    for trace, trial in zip(figure["data"], study.trials):
        assert trace["y"] == [round(trial.intermediate_values[s], 4) for s in trace["x"]]
        assert f"dropout {trial.params['dropout']:.3g}" in trace["hovertemplate"]  # as the model used it
    for trial in study.trials:
        png = uploaded(sqlite_url, study, trial.number)["image/png"]
        assert png.artifact_id in note(sqlite_url, study, trial.number)
        with Image.open(tmp_path / "artifacts" / png.artifact_id) as image:
            assert image.width >= 1200
    assert not math.isnan(study.best_value)


def test_a_title_is_text_not_mathtext(tmp_path, drawn):
    title = r"study a$\frac$b trial 3 retrained"  # a study name is anyone's
    plot_curves({"accuracy": [0.3, 0.4], "loss": [2.0, 1.0]}, tmp_path / "curves.png", title)
    assert drawn[0].get_suptitle() == title
    assert not any(line.get_label().startswith("best epoch") for line in drawn[0].axes[0].lines)
