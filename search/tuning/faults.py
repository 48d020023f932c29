"""Faults while a worker runs, told as what they are: a failing storage stops the worker in one
line; any other error fails only its own trial, with the reason recorded on it."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Callable

import optuna

from search.base.errors import Interrupted, StorageUnavailable, TrialsFailing, one_line
from search.tuning.storage import STORAGE_ERRORS, StudyStorage
from search.tuning.study import NoQueuedTrial, queued_before
from search.tuning.total import TrialCap

# The first line of the driver's error (lower case) -> what it means, for the one-line message.
_STORAGE_FAULTS = (
    ("disk is full", "disk full"),
    ("no space left", "disk full"),
    ("file is not a database", "the database file is corrupt"),
    ("malformed", "the database file is corrupt"),
    ("readonly database", "the database is read-only"),
    ("read-only", "the database is read-only"),
    ("disk i/o error", "disk I/O error"),
    ("database is locked", "the database stayed locked"),
    ("statement timeout", "a statement ran past the statement timeout (a lock held too long?)"),
    ("lock wait timeout", "a lock was held too long"),
    ("terminating connection", "the server ended the connection"),
    ("server closed the connection", "the server ended the connection"),
    ("lost connection", "the connection was lost"),
    ("timed out", "the connection timed out"),
    ("packet sequence number wrong", "the server does not speak MySQL's protocol"),
)


def storage_failure(storage: StudyStorage, exc: BaseException) -> StorageUnavailable:
    """One line saying what went wrong with the storage (never "unreachable" unless it was)."""
    if isinstance(exc, StorageUnavailable):  # raised by the reconnection, which says how long
        return exc
    reason = storage.reason(exc.__cause__ or exc)
    what = next((w for key, w in _STORAGE_FAULTS if key in reason.lower()), "storage error")
    return StorageUnavailable(f"STORAGE {storage.masked}: {what}, stopping ({reason})")


@contextmanager
def storage_failures(storage: StudyStorage) -> Iterator[None]:
    """Inside, a failing storage raises ``StorageUnavailable`` saying what happened."""
    try:
        yield
    except STORAGE_ERRORS as exc:
        raise storage_failure(storage, exc) from None


def _hidden_storage_error(exc: BaseException) -> BaseException:
    """The storage error behind ``exc``, else ``exc``.

    When the storage fails as Optuna records a trial's end (and again as it reads the trial back),
    Optuna's ``_run_trial`` fails in its own ``finally``: ``UnboundLocalError`` ('updated_state')
    or ``AssertionError`` ("Should not reach."), with the storage's error as their context.
    """
    context = exc.__context__
    while context is not None and not isinstance(context, STORAGE_ERRORS):
        context = context.__context__
    return exc if context is None else context


class TrialFailed(Exception):
    """An unexpected error inside one trial: the trial is FAIL with its reason, the worker goes on."""


class TrialTakenOver(Exception):
    """Another worker finished this worker's trial (failed it as stale: this one stalled past the
    grace period, and its retry runs elsewhere); the worker leaves it as it is and goes on."""


class _StorageFailedInTrial(BaseException):
    """A failing storage inside a trial, carried past Optuna's ``_run_trial`` (which catches
    ``Exception``) so that Optuna records nothing more of the trial. Had it recorded a FAIL once
    the storage answered again (a restarted server), no worker would ever retry the trial; left
    RUNNING, its heartbeat goes stale and a worker retries it (``max_retry``)."""


class QueuedTwice(NoQueuedTrial):
    """A queued trial that an earlier one duplicates (``queued_before``): left FAIL, untrained."""


class GuardedObjective:
    """The objective as a worker runs it.

    ``attrs`` are recorded first, so that even a trial that fails at once says whose it is. An
    unexpected error fails only its trial (user attr ``fail_reason``, then ``TrialFailed`` for
    Optuna's ``catch``); a requested stop is raised as it is, and a failing storage past Optuna
    (``_StorageFailedInTrial``), then by ``run_one`` as it is.
    ``record(failed)`` counts finished trials and returns how many in a row have failed.
    """

    def __init__(
        self,
        objective: Callable[[optuna.Trial], float],
        attrs: dict[str, Any],
        record: Callable[[bool], int],
        cap: TrialCap | None = None,
        queued_only: bool = False,
    ) -> None:
        self.objective, self.attrs, self.record, self.cap = objective, attrs, record, cap
        self.queued_only = queued_only
        self.failures_in_a_row = 0
        self.last_failure = ""
        self.taken_over: str | None = None
        self.queue_empty = False

    def __call__(self, trial: optuna.Trial) -> float:
        if self.cap is not None:  # the trial exists: the next worker may count it
            self.cap.release()
        try:
            if self.queued_only and (first := queued_before(trial)) is not None:
                raise QueuedTwice(f"queued twice (two commands at once): trial {first} is this run; not run")
            for key, value in self.attrs.items():
                trial.set_user_attr(key, value)
            value = self.objective(trial)
        except optuna.TrialPruned:
            self.failures_in_a_row = self.record(False)
            raise
        except STORAGE_ERRORS as exc:
            raise _StorageFailedInTrial from exc
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            self.taken_over = (f"trial {trial.number} was failed as stale by another worker while this one "
                               "stalled past the grace period; left as it is, going on")
            raise TrialTakenOver(self.taken_over) from exc
        except NoQueuedTrial as exc:  # not a failure of training: nothing was trained
            trial.set_user_attr("fail_reason", str(exc))
            self.queue_empty = not isinstance(exc, QueuedTwice)  # then the worker stops
            raise TrialFailed(str(exc)) from exc
        except Exception as exc:
            reason = one_line(exc)
            trial.set_user_attr("fail_reason", reason)
            self.failures_in_a_row = self.record(True)
            self.last_failure = f"trial {trial.number}: {reason}"
            raise TrialFailed(self.last_failure) from exc
        self.failures_in_a_row = self.record(False)
        return value

    def run_one(self, study: optuna.Study) -> bool:
        """One trial through Optuna's loop; a trial taken over by another worker is one warning.
        False (and no trial) once the study holds its TOTAL."""
        self.taken_over = None
        if self.cap is not None and not self.cap.admit(study):
            return False
        lost: BaseException | None = None
        try:
            study.optimize(self, n_trials=1, gc_after_trial=True, catch=(TrialFailed,))
        except _StorageFailedInTrial as exc:  # the trial stays RUNNING, to be retried
            lost = exc.__cause__
        except ValueError:  # Optuna's "Cannot tell a FAIL trial": it is no longer this worker's
            if self.taken_over is None:
                raise
            print(f"warning: {self.taken_over}", file=sys.stderr)
        except (UnboundLocalError, AssertionError) as exc:
            if (hidden := _hidden_storage_error(exc)) is exc:
                raise
            raise hidden  # its own cause kept: the driver's error, told in the one line
        finally:
            if self.cap is not None:  # no trial came to be: the storage failed (else the turn
                with suppress(*STORAGE_ERRORS):  # is taken back after TURN_SECONDS), a stop
                    self.cap.release()
        if lost is not None:
            raise lost
        return True

    def check(self, limit: int) -> None:
        """Stop, in one line, once this worker's trial is the ``limit``-th failure in a row."""
        if self.failures_in_a_row == limit:
            raise TrialsFailing(
                f"{limit} trials in a row failed, stopping (last, {self.last_failure}); "
                "each trial's user attr fail_reason says why"
            )


class _FailedTrialsTold(logging.Filter):
    """Optuna's two "trial failed" warnings, with the traceback of what failed the trial; none
    where that is told in one line anyway (a failing storage), and neither warning for a trial a
    requested stop ended (its own trial line says so, and the command's closing line)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: set[str] = set()  # "Trial N": its second warning is dropped too

    def filter(self, record: logging.LogRecord) -> bool:
        trial = " ".join(str(record.msg).split()[:2])  # "Trial N failed with ..."
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, Interrupted):
            self.stopped.add(trial)
            return False
        if trial in self.stopped and "failed with value" in str(record.msg):
            self.stopped.discard(trial)
            return False
        if isinstance(error, (TrialTakenOver, *STORAGE_ERRORS)) or isinstance(
            getattr(error, "__cause__", None), NoQueuedTrial
        ):
            record.exc_info = None
        elif isinstance(error, TrialFailed) and error.__cause__ is not None:
            record.exc_info = (type(error.__cause__), error.__cause__, error.__cause__.__traceback__)
        return True


@contextmanager
def told_briefly(storage: StudyStorage, prefix: str = "") -> Iterator[None]:
    """While inside, stops and storage failures are one line, never a traceback: in Optuna's
    "trial failed" warning, and in its heartbeat thread. On leaving, both are as they were.

    A heartbeat that cannot be recorded (the storage unreachable past its reconnection, full,
    ...) ends the process at once with exit code 3 and one line (``prefix`` first): training on
    would be lost, as the trial goes stale and the fleet retries it elsewhere.
    """
    logger = optuna.logging.get_logger("optuna.study._optimize")
    told = None if any(isinstance(f, _FailedTrialsTold) for f in logger.filters) else _FailedTrialsTold()
    if told is not None:  # else an outer one tells them
        logger.addFilter(told)
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.exc_value, STORAGE_ERRORS):
            return previous(args)
        error = storage_failure(storage, args.exc_value)
        print(f"{prefix}error: {error} (a running trial's heartbeat was not recorded; "
              "it is retried once stale)", file=sys.stderr, flush=True)
        os._exit(error.exit_code)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
        if told is not None:
            logger.removeFilter(told)
