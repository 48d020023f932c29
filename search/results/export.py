"""``export``: the best trial (and the top k) with all that retraining needs, as YAML and JSON.

With confirmation runs (``make confirm``) the trials are ranked by their confirmed mean, and
the export carries those runs and the gain over the baseline with its 95% interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from search.base.config import PARAMS, StudyConfig
from search.base.errors import UsageError
from search.base.names import companion_name, inside
from search.base.paths import EXPORTS
from search.base.stats import gain
from search.tuning.compare import (
    BASELINE,
    Runs,
    baseline_trial,
    confirmed_first,
    load_confirmations,
    trial_entry,
)
from search.tuning.storage import open_storage
from search.tuning.study import stored_config

UNCONFIRMED = (
    "unconfirmed: ranked by one training run per trial, at the seed it was searched with; "
    "make confirm trains the top trials and the baseline again with fresh seeds"
)


def _entry(trial: FrozenTrial, config: StudyConfig) -> dict[str, Any]:
    """``trial_entry`` and the values the model used (``effective_params``: 0 is off)."""
    entry = trial_entry(trial)
    if set(PARAMS) <= set(trial.params):
        entry["effective_params"] = config.search_space.effective(trial.params)
    return entry


def _baseline(study: optuna.Study, config: StudyConfig) -> dict[str, Any] | None:
    """The baseline's trial; its point (and no value) if that trial is not complete."""
    if config.baseline is None:
        return None
    base = baseline_trial(study)
    if base is not None and base.state == TrialState.COMPLETE:
        return _entry(base, config)
    params = config.search_space.trial_params(config.baseline.model_dump())
    return {"trial": None if base is None else base.number, "value": None, "best_epoch": None,
            "epochs_run": None, "seed": None, "params": params,
            "effective_params": config.search_space.effective(params)}


def verdict(
    study: optuna.Study, config: StudyConfig, chosen: FrozenTrial, runs: list[Runs]
) -> dict[str, Any]:
    """Whether ``chosen`` is confirmed, the baseline, and the gain over it."""
    baseline = _baseline(study, config)
    found = {r.source_trial: r for r in runs if r.source_trial is not None}
    base_runs = next((r for r in runs if r.key == BASELINE), None)
    if chosen.number not in found:
        single = baseline is not None and baseline["value"] is not None
        return {"confirmed": False, "note": UNCONFIRMED, "baseline": baseline,
                "gain": {"mean": chosen.value - baseline["value"], "low": None, "high": None,
                         "method": "one search run each"} if single else None}
    mine = found[chosen.number]
    notes = []
    if mine.key == BASELINE:
        notes.append("the baseline has the best confirmed mean: no trial beats it")
    if base_runs is None:
        notes.append("the baseline has no confirmed run yet: no gain")
    return {
        "confirmed": True,
        **({"note": "; ".join(notes)} if notes else {}),
        "baseline": baseline,
        "confirmation": {
            "study": companion_name(study.study_name),
            "epochs": config.training.epochs,
            "chosen": mine.entry(),
            "baseline": None if base_runs is None else base_runs.entry(),
            "ranking": [{"trial": r.source_trial, "baseline": r.key == BASELINE, "runs": len(r.values),
                         "mean": r.mean} for r in runs],
        },
        "gain": None if base_runs is None else gain(mine.values, base_runs.values),
    }


def export(
    storage_url: str | None, study_name: str, top: int = 1, root: Path = EXPORTS
) -> list[Path]:
    """Write ``best.yaml`` and ``.json`` (and ``top.*`` if ``top > 1``); return the paths."""
    folder = inside(root, study_name)
    storage = open_storage(storage_url, read_only=True)
    config = stored_config(storage, study_name)
    study = storage.load(study_name)
    runs = load_confirmations(storage, study_name)
    trials = confirmed_first(study, runs)[:top]
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
    best = {**header, **_entry(trials[0], config), **verdict(study, config, trials[0], runs), **footer}
    documents = {"best": best}
    if top > 1:
        confirmed = {r.source_trial: r.entry() for r in runs if r.source_trial is not None}
        ranks = [{"rank": i, **_entry(t, config), "confirmed": confirmed.get(t.number)}
                 for i, t in enumerate(trials, 1)]
        documents["top"] = {**header, "confirmed": bool(runs), "trials": ranks, **footer}
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
