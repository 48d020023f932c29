"""Study names become file and folder names: one rule for them, and a path that stays inside.

A name can come from a flag, a config or a database that others write; whatever it holds,
``exports/<name>/`` and ``reports/<name>.html`` stay in their folders.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from search.base.errors import UsageError

# ASCII letters, digits, '.', '_' and '-', starting with a letter or digit: no separator, no
# '..', no leading '-' or '.', no control or look-alike characters, the same on every file system.
PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_LENGTH = 100
CONFIRMS = "confirms"  # user attr of a companion study: the study whose trials it confirms
RULE = f"use up to {MAX_LENGTH} letters, digits, '.', '_' and '-', starting with a letter or digit"


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a study name (a file name), or None if it can."""
    if not isinstance(name, str):
        return f"not text ({type(name).__name__})"
    if len(name) > MAX_LENGTH:
        return f"too long; {RULE}"
    if not PATTERN.fullmatch(name):
        return RULE
    return None


def shown(name: object) -> str:
    """The name for a one-line message: as is if it is a valid study name, else quoted, escaped
    (no newline or terminal code) and shortened."""
    if name_problem(name) is None:
        return name  # type: ignore[return-value]
    text = ascii(name)
    return text if len(text) <= 60 else f"{text[:50]}...' ({len(str(name))} characters)"


def check_name(name: object) -> str:
    """``name`` if it is a valid study name, else ``UsageError`` in one line."""
    if problem := name_problem(name):
        raise UsageError(f"study name {shown(name)}: {problem}")
    return name  # type: ignore[return-value]


def _valid(name: str) -> str:
    if problem := name_problem(name):
        raise ValueError(f"{shown(name)}: {problem}")
    return name


StudyName = Annotated[str, AfterValidator(_valid)]  # the same rule, for pydantic models


def inside(root: Path, name: str, suffix: str = "") -> Path:
    """``root / (name + suffix)`` for a valid ``name``, checked to resolve inside ``root``."""
    path = root / f"{check_name(name)}{suffix}"
    base = root.resolve()
    if path.resolve().parent != base:  # e.g. a symlink planted at root/name
        raise UsageError(f"{path}: resolves outside {root}; remove it or choose another name")
    return path


def companion_name(study_name: str) -> str:
    """The study that holds the confirmation runs of ``study_name``."""
    return f"{study_name}.confirm"
