"""Creating, resuming and checking a study: sampler, pruner and the recorded definition."""

from __future__ import annotations

import json
import signal
import time
import warnings
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any, Iterator

import optuna
from optuna.study import StudyDirection

from search.base import config as cfg
from search.base.errors import UsageError
from search.learning.data import other_data
from search.tuning.storage import StudyStorage

PACKAGES = ("tensorflow", "keras", "optuna", "optuna-integration", "optuna-dashboard", "sqlalchemy")
DEFINITION_WAIT_SECONDS = 10.0  # how long a joining command waits for a racing creator


def package_versions() -> dict[str, str]:
    return {name: version(name) for name in PACKAGES}


class NoQueuedTrial(Exception):
    """A command that runs only queued trials (``confirm``) was handed one it had not queued."""


def queued_before(trial: optuna.Trial) -> int | None:
    """An earlier trial queued as this one was (the same user attrs, as the queue gave them) that
    has not failed: two commands that queued the same runs at once (``confirm``) run each once."""
    queued = dict(trial.user_attrs)
    for other in trial.study.get_trials(deepcopy=False):
        if other.number < trial.number and other.state != optuna.trial.TrialState.FAIL and queued and all(
            other.user_attrs.get(key) == value for key, value in queued.items()
        ):
            return other.number
    return None


class QueuedOnlySampler(optuna.samplers.RandomSampler):
    """The sampler of a command that runs only queued trials: a queued trial's values are all
    fixed, so it is never asked for one; if it is, the queue ran empty under the command (another
    took the last trial first) and nothing is sampled."""

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        raise NoQueuedTrial(f"no queued trial was left for trial {trial.number} (another command took "
                            "the last); nothing sampled")


def make_sampler(sampler: cfg.Sampler, seed: int) -> optuna.samplers.BaseSampler:
    if isinstance(sampler, cfg.RandomSampler):
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # group is experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=sampler.n_startup_trials,
            multivariate=sampler.multivariate,
            group=sampler.multivariate,  # l1 and l2 exist only when on: sampled jointly per group
            constant_liar=sampler.constant_liar,
        )


def make_pruner(pruner: cfg.Pruner, max_epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner, for steps that are epochs counted from 1.

    ``n_warmup_steps`` epochs are never pruned (Optuna's earliest pruning step is its
    ``n_warmup_steps``, hence the + 1); ``min_resource`` is the epochs before the first rung.
    """
    if isinstance(pruner, cfg.MedianPruner):
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.n_startup_trials, n_warmup_steps=pruner.n_warmup_steps + 1
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


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (they are delivered right after it)."""
    stops = {signal.SIGINT, signal.SIGTERM}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _record_definition(
    study: optuna.Study, config: cfg.StudyConfig, data: dict[str, Any] | None
) -> None:
    """What the study was started from, and its baseline queued as the first trial;
    ``fingerprint`` goes last: it marks the record complete."""
    with warnings.catch_warnings():  # experimental since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_accuracy"])
    study.set_user_attr("config", config.model_dump(mode="json"))
    study.set_user_attr("split", config.data.model_dump(mode="json"))
    study.set_user_attr("packages", package_versions())
    if data is not None:
        study.set_user_attr("data", data)
    if config.baseline is not None:  # the first trial; queued before the mark others wait for
        params = config.search_space.trial_params(config.baseline.model_dump())
        study.enqueue_trial(params, user_attrs={"baseline": True})
    study.set_user_attr("fingerprint", config.fingerprint())


def _empty(study: optuna.Study) -> bool:
    """No trial but a queued baseline, if that: what a command creating the study leaves when it
    stops (killed, or its storage failed) before recording the definition."""
    return study.directions == [StudyDirection.MAXIMIZE] and all(
        t.state == optuna.trial.TrialState.WAITING and t.user_attrs.get("baseline") is True for t in study.trials
    )


def not_ours(study: optuna.Study, storage: StudyStorage) -> UsageError:
    """Why a study without a recorded definition cannot be used, and exactly what to do."""
    name = study.study_name
    if _empty(study):
        return UsageError(
            f"study {name!r} was not created by this tool, or the command creating it stopped before "
            f"recording its definition; it holds no trials: delete it (`optuna delete-study --storage "
            f"'{storage.masked}' --study-name '{name}'`) and run again, or use another STUDY name"
        )
    return UsageError(
        f"study {name!r} was not created by this tool (no recorded definition); use another STUDY name"
    )


def _stored_fingerprint(study: optuna.Study, storage: StudyStorage) -> dict[str, Any]:
    """The recorded definition, waiting a little for a creator that races us to finish writing it."""
    deadline = time.monotonic() + DEFINITION_WAIT_SECONDS
    while (stored := study.user_attrs.get("fingerprint")) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if stored is None or study.directions != [StudyDirection.MAXIMIZE]:  # not multi-objective either
        raise not_ours(study, storage)
    return stored


def prepare_study(
    config: cfg.StudyConfig,
    storage: StudyStorage,
    study_name: str | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it if its recorded definition matches ``config`` and its
    recorded training data matches ``data`` (``search.learning.data.fingerprint``).

    Creation is atomic: of several commands starting the same study at once, exactly one
    creates it and records its definition; the others check theirs against it. Returns the
    study and whether this call created it.
    """
    name = study_name or config.study_name
    try:
        with _signals_deferred():  # a Ctrl-C here would leave a study without its definition
            study = optuna.create_study(study_name=name, storage=storage.rdb, direction="maximize")
            _record_definition(study, config.model_copy(update={"study_name": name}), data)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = storage.load(name)
    stored, fingerprint = _stored_fingerprint(study, storage), config.fingerprint()
    if stored != fingerprint:
        raise UsageError(
            f"study {name!r} was started with another definition; use a new STUDY name or the "
            f"original config ({_first_difference(stored, fingerprint)})"
        )
    stored_data = study.user_attrs.get("data")
    if data is not None and stored_data is None:  # new, or started before data was recorded
        study.set_user_attr("data", data)
    elif data is not None and stored_data != data:
        raise UsageError(
            f"study {name!r} was {other_data(stored_data, data)}; use the original data or a new STUDY name"
        )
    return study, False


def stored_config(storage: StudyStorage, study_name: str) -> cfg.StudyConfig:
    """The config a study was started from, as recorded on it."""
    study = storage.load(study_name)
    raw = study.user_attrs.get("config")
    if not isinstance(raw, dict) or "fingerprint" not in study.user_attrs:
        raise not_ours(study, storage)
    # a study started before baselines existed had none
    return cfg.parse_config({"baseline": None, **raw, "study_name": study_name}, f"study {study_name!r}")
