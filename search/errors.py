"""The one error type users see: bad input, reported in one line with exit code 2."""


class UsageError(Exception):
    """A config, storage URL, data folder or flag is wrong; the message says which and why."""


class Interrupted(KeyboardInterrupt):
    """Raised inside a trial after SIGINT or SIGTERM; Optuna records the trial as FAIL."""
