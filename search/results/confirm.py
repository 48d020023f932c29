"""``confirm``: the top trials and the baseline trained again with fresh seeds, at full fidelity.

The runs live in a companion study, ``<study>.confirm``: the study's recorded config with no
pruner, so every run trains all epochs on the same split and validation. Each run is enqueued
with the trial's parameters and user attrs ``source_trial``, ``seed_index``, ``seed`` and
``baseline``; the search's own workers then run the queue, the objective training with the
enqueued seed. A run that is complete (or pruned: diverged), queued or running is never enqueued
again, so ``confirm`` resumes where it stopped and reruns what failed.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from search.base.config import StudyConfig, model_values, parse_config
from search.base.errors import UsageError
from search.base.names import CONFIRMS, companion_name
from search.base.seeds import CONFIRM_STREAM, derive_seed
from search.tuning.compare import (
    BASELINE,
    baseline_trial,
    is_baseline,
    outcome_lines,
    run_key,
)
from search.tuning.storage import StorageOpener, StudyStorage
from search.tuning.study import prepare_study, stored_config

TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)


def confirm_seed(study_seed: int, key: int | str, seed_index: int) -> int:
    """A fresh seed for run ``seed_index`` of trial ``key`` (or the baseline); never a search seed,
    which comes from (study seed, trial number) alone."""
    return derive_seed(study_seed, 0 if key == BASELINE else key + 1, seed_index, CONFIRM_STREAM)


def companion_config(config: StudyConfig) -> StudyConfig:
    """The study's config for its confirmations: all epochs (no pruner), no baseline trial of its own."""
    name = companion_name(config.study_name)
    raw = {**config.model_dump(mode="json"), "study_name": name, "pruner": {"name": "none"}, "baseline": None}
    return parse_config(raw, f"study {name!r}")


def planned_runs(
    study: optuna.Study, config: StudyConfig, top: int, seeds: int
) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """Params and user attrs of every run: the baseline and the ``top`` best other trials."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = sorted((t for t in complete if not is_baseline(t)), key=lambda t: t.value, reverse=True)
    sources: list[tuple[int | str, int | None, dict[str, float | bool]]] = [
        (t.number, t.number, config.search_space.trial_params(model_values(t))) for t in best[:top]
    ]  # through the values the model used: a trial stored under the old encoding is run alike
    if config.baseline is not None:
        base = baseline_trial(study)
        params = config.search_space.trial_params(config.baseline.model_dump())
        sources.insert(0, (BASELINE, None if base is None else base.number, params))
    return [
        (params, {"source_trial": number, "seed_index": i, "seeds": seeds,
                  "seed": confirm_seed(config.seed, key, i), "baseline": key == BASELINE})
        for key, number, params in sources
        for i in range(seeds)
    ]


def _companion(
    config: StudyConfig, storage: StudyStorage, study_name: str, data: dict[str, Any]
) -> optuna.Study:
    """Create or resume the companion study; refuse a study of that name that is something else."""
    companion, _ = prepare_study(config, storage, config.study_name, data)
    marker = companion.user_attrs.get(CONFIRMS)
    if marker != study_name:
        if marker is not None or any(run_key(t.user_attrs) is None for t in companion.trials):
            raise UsageError(f"study {companion.study_name!r} exists and does not hold the "
                             f"confirmations of {study_name!r}; rename it, or the STUDY")
        companion.set_user_attr(CONFIRMS, study_name)
    return companion


def confirm(
    opener: StorageOpener,
    study_name: str,
    top: int = 3,
    seeds: int = 3,
    workers: int | None = 1,
    data_dir: str | None = None,
    runs: int | None = None,
) -> int:
    """Run the missing confirmation runs (at most ``runs`` of them now); return the exit code."""
    from search.learning.data import load_split
    from search.running.runner import SearchRequest, run_search
    from search.tuning.notes import save_study_note

    config = stored_config(opener.open(read_only=True), study_name)
    storage = opener.open(config.storage)
    study = storage.load(study_name)
    if isinstance(confirmed := study.user_attrs.get(CONFIRMS), str):
        raise UsageError(f"study {study_name!r} holds the confirmations of {confirmed!r}: confirm that one")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UsageError(f"study {study_name!r} has no complete trial yet: nothing to confirm")
    plan = planned_runs(study, config, top, seeds)
    companion_cfg = companion_config(config)
    split = load_split(data_dir, config.data)
    prepare_study(config, storage, study_name, split.fingerprint)  # the search's data, or stop here
    companion = _companion(companion_cfg, storage, study_name, split.fingerprint)
    del split

    taken = {run_key(t.user_attrs) for t in companion.get_trials(deepcopy=False, states=TAKEN)}
    missing = [(params, attrs) for params, attrs in plan if run_key(attrs) not in taken]
    for params, attrs in missing:
        companion.enqueue_trial(params, user_attrs=attrs)
    waiting = len(companion.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    todo = waiting if runs is None else min(runs, waiting)
    print(f"confirming {study_name!r} in {companion.study_name!r}: {len(plan)} runs planned "
          f"({len(plan) // seeds} configurations x {seeds} seeds), {len(plan) - len(missing)} done or "
          f"under way, {len(missing)} queued now; running {todo} of the {waiting} waiting", flush=True)
    code = 0
    if todo:
        code = run_search(SearchRequest(companion_cfg, todo, opener, workers, companion.study_name, data_dir,
                                        queued_only=True))  # another confirm at once shares the queue
    else:
        print("\n".join(outcome_lines(study, storage)))
    save_study_note(study, config, storage)  # the search's note gets the confirmed figures
    return code
