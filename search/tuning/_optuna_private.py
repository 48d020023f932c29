"""The one private API of optuna-dashboard this package uses, kept here alone.

optuna-dashboard saves a Plotly figure (``save_plotly_graph_object``) in chunks of study system
attrs but offers no public reader; a writer that races another needs to read it back. When an
upgrade moves it, ``tests/test_optuna_private.py`` fails naming it.
"""

from __future__ import annotations

from optuna.storages import BaseStorage


def stored_graph_object(storage: BaseStorage, study_id: int, graph_object_id: str) -> str | None:
    """The JSON text of the figure optuna-dashboard holds under ``graph_object_id``, if any."""
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    return get_plotly_graph_objects(storage.get_study_system_attrs(study_id)).get(graph_object_id)
