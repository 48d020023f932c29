"""``export``: the best trial (and the top k) with all that retraining needs, as YAML and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from search.errors import UsageError
from search.paths import EXPORTS
from search.names import inside
from search.storage import open_storage
from search.study import stored_config


def ranked(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best complete trials, best first."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.value, reverse=True)[:k]


def trial_entry(trial: FrozenTrial) -> dict[str, Any]:
    """What identifies a trial and reproduces it: number, value, best epoch, seed, parameters."""
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "value": trial.value,
        "best_epoch": attrs.get("best_epoch"),
        "epochs_run": attrs.get("epochs_run"),
        "seed": attrs.get("seed"),
        "params": dict(trial.params),
    }


def export(
    storage_url: str | None, study_name: str, top: int = 1, root: Path = EXPORTS
) -> list[Path]:
    """Write ``best.yaml`` and ``.json`` (and ``top.*`` if ``top > 1``); return the paths."""
    folder = inside(root, study_name)
    storage = open_storage(storage_url, read_only=True)
    config = stored_config(storage, study_name)
    study = storage.load(study_name)
    trials = ranked(study, top)
    if not trials:
        raise UsageError(f"study {study_name!r} has no complete trial yet: nothing to export")
    header = {
        "study_name": study_name,
        "storage": storage.masked,
        "metric": "val_accuracy",
    }
    footer = {
        "config": config.model_dump(mode="json"),  # model, optimizer, batch size, epochs, split
        "packages": study.user_attrs.get("packages", {}),  # those the trials ran with
    }
    documents = {"best": {**header, **trial_entry(trials[0]), **footer}}
    if top > 1:
        ranks = [{"rank": i, **trial_entry(t)} for i, t in enumerate(trials, 1)]
        documents["top"] = {**header, "trials": ranks, **footer}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, document in documents.items():
        for path, text in (
            (folder / f"{stem}.yaml", yaml.safe_dump(document, sort_keys=False)),
            (folder / f"{stem}.json", json.dumps(document, indent=2) + "\n"),
        ):
            path.write_text(text)
            written.append(path)
    return written
