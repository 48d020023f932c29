"""``export``: the best trial (and the top k) with all that retraining needs, as YAML and JSON.

Before confirmation the best is the best by search (one run each, unconfirmed); with
confirmation runs (``make confirm``) it is the configuration with the best confirmed mean, and
the export carries those runs and the gain over the baseline with its 95% interval. ``params``
are the values the model used (0: off); ``sampled`` the parameters as Optuna stores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.base.config import StudyConfig
from search.base.errors import UsageError
from search.base.files import finite, folder_in, json_text, write_text
from search.base.names import companion_name, inside
from search.base.paths import EXPORTS
from search.base.stats import gain, rounded
from search.base.yamlfile import yaml_text
from search.tuning.compare import (
    BASELINE,
    SEARCH_BEST,
    SEARCH_RANKING,
    Runs,
    baseline_trial,
    best_by_value,
    confirmed_first,
    is_baseline,
    load_confirmations,
    trial_entry,
)
from search.tuning.storage import StorageOpener
from search.tuning.study import stored_config

CONFIRMED_BEST = "best by confirmed mean (fresh seeds, all epochs)"
CONFIRMED_RANKING = "confirmed configurations by confirmed mean, then the others by search"
UNCONFIRMED = (
    "unconfirmed: ranked by one training run per trial, at the seed it was searched with; "
    "make confirm trains the top trials and the baseline again with fresh seeds"
)




def _baseline(study: optuna.Study, config: StudyConfig) -> dict[str, Any] | None:
    """The baseline's trial; its point (and no value) if that trial is not complete."""
    if config.baseline is None:
        return None
    base = baseline_trial(study)
    if base is not None and base.state == TrialState.COMPLETE:
        return trial_entry(base)
    point = config.baseline.model_dump()
    return {"trial": None if base is None else base.number, "baseline": True, "value": None,
            "best_epoch": None, "epochs_run": None, "seed": None, "params": point,
            "sampled": config.search_space.trial_params(point)}


def verdict(
    study: optuna.Study, config: StudyConfig, chosen: FrozenTrial, runs: list[Runs]
) -> dict[str, Any]:
    """Whether ``chosen`` is confirmed, the baseline, and the gain over it."""
    baseline = _baseline(study, config)
    found = {r.source_trial: r for r in runs if r.source_trial is not None}
    base_runs = next((r for r in runs if r.key == BASELINE), None)
    if chosen.number not in found:
        single = baseline is not None and baseline["value"] is not None
        return {"best_by": SEARCH_BEST, "confirmed": False, "note": UNCONFIRMED, "baseline": baseline,
                "gain": {"mean": rounded(chosen.value - baseline["value"]), "low": None, "high": None,
                         "method": "one search run each"} if single else None}
    mine = found[chosen.number]
    notes = []
    if mine.key == BASELINE:
        notes.append("the baseline has the best confirmed mean: no trial beats it")
    if base_runs is None:
        notes.append("the baseline has no confirmed run yet: no gain")
    return {
        "best_by": CONFIRMED_BEST,
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
            SEARCH_RANKING: [{"trial": t.number, "baseline": is_baseline(t), "value": rounded(t.value)}
                             for t in best_by_value(study, len(study.trials))],
        },
        "gain": None if base_runs is None else gain(mine.values, base_runs.values),
    }


def export(
    opener: StorageOpener, study_name: str, top: int = 1, root: Path = EXPORTS
) -> list[Path]:
    """Write ``best.yaml`` and ``.json`` (and ``top.*`` if ``top > 1``); return the paths."""
    folder = inside(root, study_name)
    storage = opener.open(read_only=True)
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
        "data": study.user_attrs.get("data"),  # the training images searched on; retrain checks
    }
    best = {**header, **trial_entry(trials[0]), **verdict(study, config, trials[0], runs), **footer}
    documents = {"best": best}
    if top > 1:
        confirmed = {r.source_trial: r.entry() for r in runs if r.source_trial is not None}
        ranks = [{"rank": i, **trial_entry(t), "confirmed": confirmed.get(t.number)}
                 for i, t in enumerate(trials, 1)]
        ranked_by = CONFIRMED_RANKING if runs else SEARCH_RANKING
        documents["top"] = {**header, "ranked_by": ranked_by, "confirmed": bool(runs), "trials": ranks,
                            **footer}
    folder = folder_in(root, folder.name)
    written = []
    for stem, document in documents.items():
        text = yaml_text(finite(document))  # null where JSON has it
        written += [write_text(folder / f"{stem}.yaml", text),
                    write_text(folder / f"{stem}.json", json_text(document))]
    return written
