"""Command-line parsing shared by ``python -m search`` and ``python -m bench``: errors in one line,
and every number bounded so that the program keeps working (a shared counter, a port, a seed)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

MAX_COUNT = 1_000_000  # trials, runs, repeats: what a shared counter and a person's patience hold


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit code 2, not a usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def integer(text: str, low: int, high: int) -> int:
    """``text`` as an integer from ``low`` to ``high``, for an argument ``type``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    if value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
    return value


def bounded(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``low`` to ``high``."""
    return lambda text: integer(text, low, high)


positive = bounded(1, MAX_COUNT)
