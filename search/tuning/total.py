"""TOTAL: the search trials a study may hold in all, across every command and every host.

Commands with ``--total N`` start a trial only while holding the study's turn, a lease row in
the study's own database (table ``search_total_turn``): taken by one conditional UPDATE, the
same on PostgreSQL (through PgBouncer too: nothing outlives a transaction), MySQL and SQLite. The
holder counts the study's trials, creates its own (Optuna's ``ask``) and hands the turn on as
soon as its trial exists, so that count and creation are one step for the whole fleet and the
study never holds more than N. A holder that dies loses the turn after ``TURN_SECONDS``.

Counted: every trial but the baseline and the retries of trials whose worker was lost (the same
point run again in its place: the lost one stays FAIL). A trial queued (WAITING), a retry
included, is still run once the study holds N: it is held already.
"""

from __future__ import annotations

import time
import uuid
import warnings

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from search.base.errors import StorageUnavailable
from search.tuning.storage import StudyStorage

TOTAL_MAX = 1_000_000
TURN_SECONDS = 120.0  # a turn not handed on by then is taken from its holder (it died)
WAIT_SECONDS = 2 * TURN_SECONDS  # waiting longer for a turn is a fault (exit 3)

_METADATA = sqlalchemy.MetaData()
TURNS = sqlalchemy.Table(
    "search_total_turn",
    _METADATA,
    sqlalchemy.Column("study_name", sqlalchemy.String(512), primary_key=True),
    sqlalchemy.Column("holder", sqlalchemy.String(64), nullable=True),
    sqlalchemy.Column("until", sqlalchemy.Float, nullable=False),
)


def counted(trial: FrozenTrial) -> bool:
    """Whether the trial counts towards TOTAL: neither the baseline nor the retry of a lost trial."""
    with warnings.catch_warnings():  # experimental in Optuna, which warns on every call: noise to a user
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.user_attrs.get("baseline") is not True and retried is None


def held(study: optuna.Study) -> int:
    """The search trials the study holds, as TOTAL counts them."""
    return sum(counted(t) for t in study.get_trials(deepcopy=False))


class TrialCap:
    """The study's TOTAL, kept by this worker: ``admit`` before each trial, ``release`` once
    the trial exists (or did not come to be)."""

    def __init__(self, storage: StudyStorage, study_name: str, total: int) -> None:
        self.storage, self.study_name, self.total = storage, study_name, total
        self.holder = uuid.uuid4().hex
        self._holding = self._table_made = False

    def admit(self, study: optuna.Study) -> bool:
        """Take the study's turn and keep it if another trial may start; False (the turn handed
        on) once the study holds ``total`` and none is queued. Stale trials (their worker lost)
        are failed first, and their retries queued: a full study still runs them."""
        if not self._table_made:
            _create_table(self.storage.rdb.engine)
            self._table_made = True
        self._take()
        with warnings.catch_warnings():  # experimental in Optuna since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a lost worker's trial: queued again, then run
        trials = study.get_trials(deepcopy=False)
        if sum(counted(t) for t in trials) < self.total or any(t.state == TrialState.WAITING for t in trials):
            return True
        self.release()
        return False

    def release(self) -> None:
        """Hand the turn on (nothing if this worker does not hold it)."""
        if not self._holding:
            return
        with self.storage.rdb.engine.begin() as connection:
            connection.execute(sqlalchemy.update(TURNS)
                               .where(TURNS.c.study_name == self.study_name, TURNS.c.holder == self.holder)
                               .values(holder=None, until=0.0))
        self._holding = False

    def _take(self) -> None:
        deadline, delay = time.monotonic() + WAIT_SECONDS, 0.02
        while not self._try_take():
            if time.monotonic() > deadline:
                raise StorageUnavailable(
                    f"STORAGE {self.storage.masked}: the study's TOTAL turn was held for more than "
                    f"{WAIT_SECONDS:.0f}s, stopping")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        self._holding = True

    def _try_take(self) -> bool:
        now = time.time()  # hosts' clocks agree within far less than TURN_SECONDS (NTP)
        free = sqlalchemy.or_(TURNS.c.holder.is_(None), TURNS.c.until < now)
        with self.storage.rdb.engine.begin() as connection:
            taken = connection.execute(
                sqlalchemy.update(TURNS).where(TURNS.c.study_name == self.study_name, free)
                .values(holder=self.holder, until=now + TURN_SECONDS)
            ).rowcount
        if taken:
            return True
        try:  # the study's first turn: make its row (another worker may make it first)
            with self.storage.rdb.engine.begin() as connection:
                connection.execute(sqlalchemy.insert(TURNS).values(study_name=self.study_name,
                                                                   holder=None, until=0.0))
        except sqlalchemy.exc.IntegrityError:
            pass
        return False


def _create_table(engine: sqlalchemy.Engine) -> None:
    """The turn table, made once; of commands making it at once, the losers find it made."""
    try:
        _METADATA.create_all(engine, checkfirst=True)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        if not any(race in str(exc).lower() for race in ("already exists", "duplicate", "unique")):
            raise
