"""Creating, resuming and checking a study: sampler, pruner and the recorded definition."""

from __future__ import annotations

import json
import warnings
from importlib.metadata import version
from typing import Any

import optuna

from search import config as cfg
from search.dashboard import save_study_note
from search.data import describe
from search.errors import UsageError

PACKAGES = ("tensorflow", "keras", "optuna", "optuna-integration", "optuna-dashboard", "sqlalchemy")


def package_versions() -> dict[str, str]:
    return {name: version(name) for name in PACKAGES}


def make_sampler(sampler: cfg.Sampler, seed: int) -> optuna.samplers.BaseSampler:
    if isinstance(sampler, cfg.RandomSampler):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=sampler.n_startup_trials,
        multivariate=sampler.multivariate,
        constant_liar=sampler.constant_liar,
    )


def make_pruner(pruner: cfg.Pruner, max_epochs: int) -> optuna.pruners.BasePruner:
    if isinstance(pruner, cfg.MedianPruner):
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.n_startup_trials, n_warmup_steps=pruner.n_warmup_steps
        )
    if isinstance(pruner, cfg.HyperbandPruner):
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_resource,
            max_resource=max_epochs,
            reduction_factor=pruner.reduction_factor,
        )
    if isinstance(pruner, cfg.SuccessiveHalvingPruner):
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_resource, reduction_factor=pruner.reduction_factor
        )
    return optuna.pruners.NopPruner()


def _first_difference(stored: Any, current: Any, path: str = "") -> str:
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current)):
            if stored.get(key) != current.get(key):
                return _first_difference(stored.get(key), current.get(key), f"{path}.{key}".lstrip("."))
    return f"{path}: stored {json.dumps(stored)}, config has {json.dumps(current)}"


def prepare_study(
    config: cfg.StudyConfig,
    storage: optuna.storages.BaseStorage,
    study_name: str | None = None,
    data: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create the study, or resume it if its recorded definition matches ``config`` and its
    recorded training data matches ``data`` (``search.data.fingerprint``)."""
    name = study_name or config.study_name
    fingerprint = config.fingerprint()
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True
        )
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_accuracy"])
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("config", config.model_dump(mode="json"))
        study.set_user_attr("split", config.data.model_dump(mode="json"))
        packages = package_versions()
        study.set_user_attr("packages", packages)
        save_study_note(study, config.model_copy(update={"study_name": name}), packages)
    elif stored != fingerprint:
        raise UsageError(
            f"study {name!r} was started with another definition; use a new STUDY name or the "
            f"original config ({_first_difference(stored, fingerprint)})"
        )
    stored_data = study.user_attrs.get("data")
    if data is not None and stored_data is None:  # new, or started before data was recorded
        study.set_user_attr("data", data)
    elif data is not None and stored_data != data:
        raise UsageError(
            f"study {name!r} was searched on other data (stored {describe(stored_data)}, DATA_DIR "
            f"has {describe(data)}); use the original data or a new STUDY name"
        )
    return study


def stored_config(storage: optuna.storages.BaseStorage, study_name: str) -> cfg.StudyConfig:
    """The config a study was started from, as recorded on it."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise UsageError(f"no study named {study_name!r} in this storage") from None
    raw = study.user_attrs.get("config")
    if raw is None:
        raise UsageError(f"study {study_name!r} was not created by this tool (no recorded config)")
    return cfg.parse_config({**raw, "study_name": study_name}, f"study {study_name!r}")
