"""Per-trial artifacts: learning curves (PNG) and per-epoch history (JSON), via optuna.artifacts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import upload_artifact

from search.errors import one_line
from search.storage import STORAGE_ERRORS, artifact_store


def plot_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    """Train and validation accuracy and loss per epoch, as in the tutorial's plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if values := history.get(key):  # no validation when retraining on all images
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set(title=f"{title}: {metric}", xlabel="epoch", ylabel=metric)
        ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


class TrialArtifacts:
    """Uploads a finished (or pruned) trial's curves and history to the artifact store."""

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
            plot_curves(history, curves, f"trial {trial.number}")
            data.write_text(json.dumps(history, indent=1))
            for path, mimetype in ((curves, "image/png"), (data, "application/json")):
                upload_artifact(
                    artifact_store=self.store,
                    file_path=str(path),
                    study_or_trial=trial,
                    mimetype=mimetype,
                )
