"""The errors users see, each reported in one line with its own exit code (see ``search.interfaces.cli``)."""

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchError(Exception):
    """An error the command reports in one line, without a traceback, and exits with ``exit_code``."""

    exit_code = 1


class UsageError(SearchError):
    """A config, storage URL, data folder or flag is wrong; the message says which and why."""

    exit_code = 2


class StorageUnavailable(SearchError):
    """The study storage failed while a command used it: unreachable, full, corrupt, read-only."""

    exit_code = 3


class TrialsFailing(SearchError):
    """Too many trials in a row failed with an unexpected error; the workers stopped."""

    exit_code = 4


class Interrupted(KeyboardInterrupt):
    """Raised inside a trial after SIGINT or SIGTERM; Optuna records the trial as FAIL."""


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM at a moment when no trial runs (start-up, creating a study, writing an
    export, retraining): the command stops there and says so in one line, exit code 130."""

    exit_code = 130

    def __init__(self, signum: int):
        self.signal = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal}")


_stopped_by: int | None = None


def _stop(signum: int, frame: object) -> None:
    global _stopped_by
    if _stopped_by is not None:  # a second signal while the first unwinds: say it, exit at once
        os.write(2, f"{Stopped(signum)}\n".encode())
        os._exit(Stopped.exit_code)
    _stopped_by = signum
    raise Stopped(signum)


def stop_on_signals() -> None:
    """From now on, Ctrl-C and SIGTERM raise ``Stopped`` in the main thread (SIGTERM's default is
    to end the process without a word; Ctrl-C's, a ``KeyboardInterrupt`` traceback); a second one
    exits at once. Trials install their own handlers while they run
    (``search.running.workers.clean_stop``)."""
    global _stopped_by
    _stopped_by = None
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)


@contextmanager
def stops_told_once() -> Iterator[None]:
    """While inside, a ``Stopped`` that Python cannot raise where the signal landed (in a
    ``__del__`` or a weakref callback, as garbage is collected) is not printed as "Exception
    ignored ..." with a traceback: ``stopped`` keeps it, and the command tells it once, at the end.
    On leaving, ``sys.unraisablehook`` is as it was."""
    previous = sys.unraisablehook

    def hook(unraisable: "sys.UnraisableHookArgs") -> None:
        if not isinstance(unraisable.exc_value, Stopped):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def stopped() -> Stopped | None:
    """The stop a signal asked for since ``stop_on_signals``, if any: also when what it raised
    was turned into another error on the way (an import inside a C extension does that)."""
    return None if _stopped_by is None else Stopped(_stopped_by)


def one_line(exc: BaseException) -> str:
    """``OSError: [Errno 28] No space left on device``: an error's type and first line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
