"""The errors users see, each reported in one line with its own exit code (see ``search.interfaces.cli``)."""


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


def one_line(exc: BaseException) -> str:
    """``OSError: [Errno 28] No space left on device``: an error's type and first line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
