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

from search.base.config import model_values, shown_params, trial_label
from search.base.errors import UsageError
from search.base.names import CONFIRMS, companion_name
from search.base.stats import describe_gain, describe_spread, gain, rounded, spread
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
                         tuple(rounded(float(t.value)) for t in trials)))
    return sorted(runs, key=lambda r: r.mean, reverse=True)


def trial_entry(trial: FrozenTrial) -> dict[str, Any]:
    """What identifies a trial and reproduces it: number, value, best epoch, seed, the values
    the model used (``params``, 0: off) and the parameters as stored (``sampled``)."""
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "baseline": is_baseline(trial),
        "value": rounded(trial.value),
        "best_epoch": attrs.get("best_epoch"),
        "epochs_run": attrs.get("epochs_run"),
        "seed": attrs.get("seed"),
        "params": model_values(trial),
        "sampled": dict(trial.params),
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


SEARCH_BEST = "best by search (one run each, unconfirmed)"
SEARCH_RANKING = "search ranking (one run each, unconfirmed)"
RANKED_SHOWN = 5  # trials listed in the search ranking's line


def _told(trial: FrozenTrial) -> str:
    return f"{trial_label(trial)}, val_accuracy {trial.value:.4f} ({shown_params(trial)})"


def search_lines(study: optuna.Study) -> list[str]:
    """The baseline and the best by search, one run each: what a study says before ``confirm``."""
    base = baseline_trial(study)
    if base is None:
        lines = ["baseline: none in this study"]
    elif base.state != TrialState.COMPLETE:
        lines = [f"baseline: trial {base.number} is {base.state.name.lower()}, no value yet"]
    else:
        lines = [f"baseline: {_told(base)}"]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return [*lines, f"{SEARCH_BEST}: no complete trial yet"]
    best = max(complete, key=lambda t: t.value)
    if base is not None and best.number == base.number:
        return [*lines, f"{SEARCH_BEST}: the baseline, no trial beats it"]
    over = ""
    if base is not None and base.state == TrialState.COMPLETE:
        over = f"; {best.value - base.value:+.4f} over the baseline"
    return [*lines, f"{SEARCH_BEST}: {_told(best)}{over}"]


def search_ranking_line(study: optuna.Study) -> str:
    """``search ranking (one run each, unconfirmed): trial 7 0.4190, trial 0 (baseline) 0.3850``."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: t.value, reverse=True)
    shown = ", ".join(f"{trial_label(t)} {t.value:.4f}" for t in complete[:RANKED_SHOWN])
    more = f" and {len(complete) - RANKED_SHOWN} more" if len(complete) > RANKED_SHOWN else ""
    return f"{SEARCH_RANKING}: {shown}{more}"


def best_confirmed_line(runs: list[Runs]) -> str:
    """The one best once confirmed: the configuration with the best confirmed mean, and its gain."""
    base = next((r for r in runs if r.key == BASELINE), None)
    best = runs[0]
    if best.key == BASELINE:
        return f"best (confirmed): the {best.label}, {describe_spread(best.values)}; no trial beats it"
    if base is None:
        return (f"best (confirmed): {best.label}, {describe_spread(best.values)}; no gain yet: "
                "the baseline has no confirmed run")
    return (f"best (confirmed): {best.label}, {describe_spread(best.values)}; gain "
            f"{describe_gain(gain(best.values, base.values))} over the baseline")


CONFIRMATION_HEAD = ("configuration", "runs", "seeds", "val_accuracy, mean ± std", "gain over the baseline (95% CI)")


def confirmation_rows(runs: list[Runs]) -> list[list[str]]:
    """One row per confirmed configuration, best mean first (``CONFIRMATION_HEAD``'s columns)."""
    base = next((r for r in runs if r.key == BASELINE), None)
    rows = []
    for r in runs:
        if r.key == BASELINE:
            versus = "(the baseline)"
        else:
            versus = "no baseline runs yet" if base is None else describe_gain(gain(r.values, base.values))
        seeds = ", ".join("?" if s is None else str(s) for s in r.seeds)
        rows.append([r.label, str(len(r.values)), seeds, describe_spread(r.values), versus])
    return rows


def confirmed_lines(runs: list[Runs]) -> list[str]:
    """Each confirmed configuration's mean ± std, and the one best with its gain over the baseline."""
    if not runs:
        return []
    lines = ["confirmed val_accuracy (fresh seeds, all epochs, no pruning), mean ± std; gain over "
             "the baseline (95% CI):"]
    lines += [f"  {label}: {spread}; {versus}" for label, _, _, spread, versus in confirmation_rows(runs)]
    return [*lines, best_confirmed_line(runs)]


def outcome_lines(study: optuna.Study, storage: StudyStorage | None = None) -> list[str]:
    """What a study found against its baseline: by search until confirmed; then the confirmed
    figures and the one best, the search's own ranking listed as such."""
    confirms = study.user_attrs.get(CONFIRMS)
    if isinstance(confirms, str):  # a companion study: what it confirms says it, from the same runs
        if storage is not None:
            try:
                return outcome_lines(storage.load(confirms), storage)
            except UsageError:
                pass
        return confirmed_lines(confirmations(study))
    runs = [] if storage is None else load_confirmations(storage, study.study_name)
    if not runs:
        return search_lines(study)
    return [*confirmed_lines(runs), search_ranking_line(study)]
