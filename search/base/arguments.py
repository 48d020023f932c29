"""Command-line parsing shared by ``python -m search`` and ``python -m bench``: errors in one line."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit code 2, not a usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def integer(text: str, low: int) -> int:
    """``text`` as an integer of at least ``low``, for an argument ``type``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive(text: str) -> int:
    """``text`` as an integer of at least 1."""
    return integer(text, 1)
