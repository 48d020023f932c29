"""Which study a command acts on when no STUDY is given: the only one, or the most recent."""

from __future__ import annotations

import shlex
from datetime import datetime

from optuna.trial import TrialState

from search.base.errors import UsageError
from search.base.names import CONFIRMS, shown
from search.tuning.storage import StudyStorage

SHOWN = 10  # studies listed in an error, at most


def last_active(storage: StudyStorage, name: str) -> datetime | None:
    """When the study's newest started trial started or finished (``max`` if it is running)."""
    rdb = storage.rdb
    study_id = rdb.get_study_id_from_name(name)
    for number in reversed(range(rdb.get_n_trials(study_id))):
        trial = rdb.get_trial(rdb.get_trial_id_from_study_id_trial_number(study_id, number))
        if trial.state == TrialState.RUNNING:
            return datetime.max
        times = [t for t in (trial.datetime_start, trial.datetime_complete) if t is not None]
        if times:  # else it is still waiting in the queue
            return max(times)
    return None


def _listing(names: list[str], command: str) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    listed = ", ".join(repr(n) for n in names[:SHOWN])
    example = next((n for n in names if n.isprintable()), None)  # no escape codes to the terminal
    hint = f", e.g. make {command} STUDY={shlex.quote(example)}" if example else ""
    return f"it holds {listed}{more}; pick one with STUDY=...{hint}"


def pick_study(storage: StudyStorage, name: str | None, command: str) -> tuple[str, str | None]:
    """The study ``command`` acts on, and a line saying why when it was not named.

    ``name`` must be in the storage; without it, the only study there, or the one with the most
    recent trial. ``command`` is the make target, for the hint in errors.
    """
    studies = storage.rdb.get_all_studies()
    names = sorted(s.study_name for s in studies)
    if name is not None:
        if name not in names:
            listing = _listing(names, command) if names else "it holds none (run make search first)"
            raise UsageError(f"no study named {name!r} in {storage.masked}: {listing}")
        return name, None
    if not names:
        raise UsageError(f"STORAGE {storage.masked} holds no studies (run make search first)")
    # make confirm's companion studies are not picked: their runs count for the study they confirm
    confirms = {s.study_name: s.user_attrs.get(CONFIRMS) for s in studies}
    searches = [n for n in names if confirms[n] not in names]
    if len(searches) == 1:
        return searches[0], f"study {shown(searches[0])} (the only one in {storage.masked})"
    active = []
    for n in searches:
        times = [t for c in names if c == n or confirms[c] == n if (t := last_active(storage, c))]
        if times:
            active.append((max(times), n))
    if not active:
        raise UsageError(
            f"no study in {storage.masked} has run a trial yet: {_listing(names, command)}"
        )
    chosen = max(active)[1]
    return chosen, (
        f"study {shown(chosen)} (the most recent of {len(searches)} in {storage.masked}; "
        "STUDY=... picks another)"
    )
