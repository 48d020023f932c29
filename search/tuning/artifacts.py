"""What a trial leaves for the reader: its learning curves (PNG, shown in its dashboard note) and
per-epoch history (JSON) via optuna.artifacts, and the study's validation curves (Plotly)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import upload_artifact
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.base.config import shown_params, trial_label
from search.base.errors import one_line
from search.base.files import json_text
from search.base.stats import DECIMALS
from search.tuning._optuna_private import stored_graph_object
from search.tuning.storage import STORAGE_ERRORS, artifact_store

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

STUDY_CURVES_ID = "validation-curves"  # the study's figure in optuna-dashboard, rewritten in place
TRAINED = (TrialState.COMPLETE, TrialState.PRUNED)  # trials that have curves to show
MAX_TICKS = 20
LOSS_TITLE = "loss: cross-entropy + this trial's L1/L2 penalty"

logger = logging.getLogger(__name__)


def plot_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    """Train and validation accuracy and loss per epoch, the best validation epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = [v for v in history.get("val_accuracy", []) if not math.isnan(v)]
    best = history["val_accuracy"].index(max(val)) + 1 if val else None  # as ``best_epoch``
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    for ax, metric, panel in zip(axes, ("accuracy", "loss"), ("accuracy", LOSS_TITLE)):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if values := history.get(key):  # no validation when retraining on all images
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", label=f"best epoch ({best})")
        ax.set(title=panel, xlabel="epoch", ylabel=metric)
        ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize="x-large", parse_math=False)  # a study name may hold "$"
    fig.savefig(path, dpi=100)
    plt.close(fig)


BASELINE_LINE = {"dash": "dash", "width": 3, "color": "black"}  # the reference stands apart


def _curve(trial: FrozenTrial, steps: list[int]) -> dict:
    """One trial's line (a dict: validated once by the figure, 3x faster than go.Scatter each);
    the baseline's dashed, thick and black, named so in the legend."""
    label = trial_label(trial)
    trace = {
        "type": "scatter",
        "x": steps,
        "y": [round(trial.intermediate_values[s], DECIMALS) for s in steps],
        "mode": "lines+markers",
        "marker": {"size": 4},
        "name": label,
        "hovertemplate": f"{label} ({shown_params(trial)})<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>",
    }
    if trial.user_attrs.get("baseline") is True:
        trace["line"] = BASELINE_LINE
    return trace


def study_curves(trials: list[FrozenTrial]) -> Figure:
    """Validation accuracy per epoch (the intermediate values), one line per trial."""
    import plotly.graph_objects as go

    traces = [_curve(t, steps) for t in trials if (steps := sorted(t.intermediate_values))]
    last = max((max(t.intermediate_values, default=0) for t in trials), default=0)
    return go.Figure(traces).update_layout(
        template="plotly_white",
        xaxis={"title": "epoch", "tickformat": "d", "dtick": max(1, math.ceil(last / MAX_TICKS))},
        yaxis_title="validation accuracy",
        title="Validation accuracy per epoch (hover for a trial's parameters)",
        legend_title="trial",
        margin={"l": 60, "r": 10, "t": 50, "b": 50},
    )


def save_study_curves(study: optuna.Study, storage: BaseStorage, current: int | None = None) -> None:
    """Store the curves of the study's trained trials (and trial ``current``) for the dashboard.

    Workers rewrite the one figure as their trials end; its JSON is stored in chunks, so two
    writes at once can interleave: it is checked and written again from fresh trials if so.
    """
    from optuna_dashboard import save_plotly_graph_object

    study_id = storage.get_study_id_from_name(study.study_name)
    for _ in range(3):
        trials = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state in TRAINED or t.number == current
        ]
        save_plotly_graph_object(study, study_curves(trials), graph_object_id=STUDY_CURVES_ID)
        try:
            json.loads(stored_graph_object(storage, study_id, STUDY_CURVES_ID) or "")
            return
        except ValueError:
            continue


def trial_note(trial: optuna.Trial, curves_url: str) -> str:
    """A trial's dashboard note: what it is (the baseline says so first) and its curves."""
    marker = ""
    if trial.user_attrs.get("baseline") is True:
        marker = ("**Baseline**: the study's reference point (user attr `baseline: true`), "
                  "never pruned; every trial is compared with it.\n\n")
    return (f"{marker}**{trial_label(trial)}**: {shown_params(trial)}\n\n"
            f"![learning curves of trial {trial.number}]({curves_url})\n")


class TrialArtifacts:
    """At a trial's end: its curves and history as artifacts, the curves shown in its note, and
    the study's curves updated. The last two only decorate the dashboard: never fail a trial."""

    def __init__(self, path: str) -> None:
        self.store = artifact_store(path)

    def __call__(self, trial: optuna.Trial, history: dict[str, list[float]]) -> None:
        """Upload; if that fails (a full disk, a read-only folder), record why on the trial,
        whose value stands. Only a failing study storage is raised."""
        try:
            self.upload(trial, history)
        except STORAGE_ERRORS:
            raise
        except Exception as exc:
            trial.set_user_attr("artifact_error", one_line(exc))

    def upload(self, trial: optuna.Trial, history: dict[str, list[float]]) -> None:
        if not history:
            return
        with tempfile.TemporaryDirectory() as tmp:
            curves, data = Path(tmp) / "learning_curves.png", Path(tmp) / "history.json"
            plot_curves(history, curves, f"{trial_label(trial)}: {shown_params(trial)}")
            data.write_text(json_text(history, indent=1))  # a private temporary folder
            curves_id, _ = [
                upload_artifact(
                    artifact_store=self.store,
                    file_path=str(path),
                    study_or_trial=trial,
                    mimetype=mimetype,
                )
                for path, mimetype in ((curves, "image/png"), (data, "application/json"))
            ]
        try:
            from optuna_dashboard import save_note

            study_id = trial.storage.get_study_id_from_name(trial.study.study_name)
            trial_id = trial.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            url = f"/artifacts/{study_id}/{trial_id}/{curves_id}"  # as the note editor
            save_note(trial, trial_note(trial, url))
            save_study_curves(trial.study, trial.storage, current=trial.number)
        except Exception as exc:  # noqa: BLE001 - the trial's own result matters more
            logger.warning("trial %d: dashboard curves not saved (%r)", trial.number, exc)
