"""The search against its baseline: the baseline trial, the confirmation runs, the gain.

The end-of-search summary, the study note, ``export`` and ``report`` all state these figures.
What a study holds is read defensively: attrs of the wrong type are ignored, never trusted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.base.config import shown_params
from search.base.errors import UsageError
from search.base.names import CONFIRMS, companion_name
from search.base.stats import describe_gain, describe_spread, gain, spread
from search.tuning.storage import StudyStorage

BASELINE = "baseline"  # what the baseline's confirmation runs confirm


def is_baseline(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get("baseline") is True


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The baseline's trial: the complete one (a retry after a crash may be), else the first."""
    marked = [t for t in study.get_trials(deepcopy=False) if is_baseline(t)]
    complete = [t for t in marked if t.state == TrialState.COMPLETE]
    return (complete or marked or [None])[0]


def run_key(attrs: dict[str, Any]) -> tuple[int | str, int] | None:
    """What a confirmation run confirms (a trial number or ``BASELINE``) and its seed index."""
    index, source = attrs.get("seed_index"), attrs.get("source_trial")
    if type(index) is not int or index < 0:
        return None
    if attrs.get("baseline") is True:
        return BASELINE, index
    return (source, index) if type(source) is int else None


@dataclass(frozen=True)
class Runs:
    """The complete confirmation runs of one configuration, in seed order."""

    key: int | str
    source_trial: int | None
    seeds: tuple[int | None, ...]
    values: tuple[float, ...]

    @property
    def label(self) -> str:
        if self.key != BASELINE:
            return f"search trial {self.key}"
        return BASELINE if self.source_trial is None else f"baseline (search trial {self.source_trial})"

    @property
    def mean(self) -> float:
        return spread(self.values)["mean"]

    def entry(self) -> dict[str, Any]:
        return {"trial": self.source_trial, "baseline": self.key == BASELINE, "runs": len(self.values),
                "seeds": list(self.seeds), "values": list(self.values), **spread(self.values)}


def confirmations(companion: optuna.Study) -> list[Runs]:
    """The complete runs grouped by configuration, best mean first; a repeated run counts once."""
    groups: dict[int | str, dict[int, FrozenTrial]] = defaultdict(dict)
    for t in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (key := run_key(t.user_attrs)) is not None:
            groups[key[0]].setdefault(key[1], t)
    runs = []
    for key, by_index in groups.items():
        trials = [by_index[i] for i in sorted(by_index)]
        source = trials[0].user_attrs.get("source_trial")
        seeds = tuple(s if type(s := t.user_attrs.get("seed")) is int else None for t in trials)
        runs.append(Runs(key, source if type(source) is int else None, seeds,
                         tuple(float(t.value) for t in trials)))
    return sorted(runs, key=lambda r: r.mean, reverse=True)


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


def load_confirmations(storage: StudyStorage, study_name: str) -> list[Runs]:
    """The confirmations of ``study_name`` (none if it has no companion study)."""
    try:
        return confirmations(storage.load(companion_name(study_name)))
    except UsageError:
        return []


def best_by_value(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The ``k`` best complete trials by their search value, best first."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.value, reverse=True)[:k]


def confirmed_first(study: optuna.Study, runs: list[Runs]) -> list[FrozenTrial]:
    """Complete trials: the confirmed ones by confirmed mean first, then the others by value."""
    means = {r.source_trial: r.mean for r in runs if r.source_trial is not None}
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: (t.number not in means, -means.get(t.number, t.value)))


def search_line(study: optuna.Study) -> str:
    """The baseline's value and the best trial's gain over it, one search run each."""
    base = baseline_trial(study)
    if base is None:
        return "baseline: none in this study"
    if base.state != TrialState.COMPLETE:
        return f"baseline: trial {base.number} is {base.state.name.lower()}, no value yet"
    text = f"baseline: trial {base.number}, val_accuracy {base.value:.4f} ({shown_params(base)})"
    best = study.best_trial
    if best.number == base.number:
        return f"{text}; no trial beats it"
    return (f"{text}; best trial {best.number} is {best.value - base.value:+.4f} over it "
            "(one run each, unconfirmed)")


def confirmed_lines(runs: list[Runs]) -> list[str]:
    """Each confirmed configuration's mean ± std, and the best one's gain over the baseline."""
    if not runs:
        return []
    lines = ["confirmed val_accuracy (fresh seeds, all epochs, no pruning), mean ± std:"]
    lines += [f"  {r.label}: {describe_spread(r.values)}" for r in runs]
    base = next((r for r in runs if r.key == BASELINE), None)
    best = next((r for r in runs if r.key != BASELINE), None)
    if base is None or best is None:
        lines.append("no gain yet: it needs confirmed runs of the baseline and of a trial")
    else:
        lines.append(f"best confirmed: {best.label}, {describe_gain(gain(best.values, base.values))} "
                     "over the baseline")
    return lines


def outcome_lines(study: optuna.Study, storage: StudyStorage | None = None) -> list[str]:
    """What a study found against its baseline (with its confirmations, given the storage)."""
    if CONFIRMS in study.user_attrs:  # a companion study: its runs are the confirmations
        return confirmed_lines(confirmations(study))
    lines = [search_line(study)]
    if storage is not None:
        lines += confirmed_lines(load_confirmations(storage, study.study_name))
    return lines
