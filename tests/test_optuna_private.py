"""The private APIs this package uses, all in ``search.tuning._optuna_private``: when an upgrade of
optuna-dashboard moves one, this fails and names it."""

from __future__ import annotations

import json

import optuna
import plotly.graph_objects as go
from optuna_dashboard import save_plotly_graph_object

from search.tuning._optuna_private import stored_graph_object


def test_a_saved_figure_reads_back(sqlite_url):
    study = optuna.create_study(study_name="figures", storage=sqlite_url)
    figure = go.Figure(go.Scatter(x=[1, 2], y=[0.5, 0.25], name="trial 0"))
    figure.update_layout(title_text="x" * 5000)  # longer than one system attr: stored in chunks
    save_plotly_graph_object(study, figure, graph_object_id="curves")
    storage = optuna.storages.get_storage(sqlite_url)
    study_id = storage.get_study_id_from_name("figures")
    try:
        stored = stored_graph_object(storage, study_id, "curves")
    except (ImportError, AttributeError) as exc:
        raise AssertionError(
            f"optuna-dashboard moved _custom_plot_data.get_plotly_graph_objects ({exc!r}): "
            "update search/tuning/_optuna_private.py"
        ) from exc
    assert json.loads(stored) == json.loads(figure.to_json())
    assert stored_graph_object(storage, study_id, "no-such-figure") is None
