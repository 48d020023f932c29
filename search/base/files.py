"""Files the commands write: never through a link planted where they go, always whole, and JSON
that is valid JSON.

Every writer puts its file in place the same way: the bytes go to a new file in the target's
folder (created with ``O_EXCL | O_NOFOLLOW``: it cannot be a link), then ``os.replace`` renames it
over the target. A rename replaces a link; it never follows it. A folder on the way must not be a
link either, so nothing lands outside the tree the command was given.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from pydantic import AfterValidator

from search.base.errors import UsageError
from search.base.names import shown

MAX_PATH = 4096  # Linux's PATH_MAX
MAX_PART = 255  # the longest file or folder name most file systems take


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path on this machine, or None if it can."""
    if not text:
        return "empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "holds a NUL or another control character"
    if len(text) > MAX_PATH:
        return f"too long ({len(text):,} characters; at most {MAX_PATH:,})"
    if any(len(part.encode()) > MAX_PART for part in text.split("/")):
        return f"a folder or file name in it is longer than {MAX_PART} bytes"
    return None


def check_path(what: str, text: str) -> Path:
    """``text`` as a ``Path``, or ``UsageError`` naming ``what`` and the problem in one line."""
    if problem := path_problem(text):
        raise UsageError(f"{what} {shown(text)}: not a usable path ({problem})")
    return Path(text)


def _valid_path(text: str) -> str:
    if problem := path_problem(text):
        raise ValueError(f"{shown(text)}: not a usable path ({problem})")
    return text


PathText = Annotated[str, AfterValidator(_valid_path)]  # the same rule, for pydantic models


def folder_in(root: Path, *names: str) -> Path:
    """``root/names...``, created if missing; ``UsageError`` if a folder below ``root`` is a link.

    ``root`` itself is the person's choice (a link to another disk is fine); what a command
    creates below it stays below it, whatever was planted there.
    """
    folder = Path(root)
    for name in names:
        folder = folder / name
        if folder.is_symlink():
            raise UsageError(f"{folder}: a symbolic link, not a folder; remove it (nothing written)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot create ({exc.strerror or exc})") from None
    return folder


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for a writer that needs a file name (Keras,
    Matplotlib); on success it replaces ``path`` (a link there is replaced, not followed).

    A file system error (a folder where the file goes, a full disk, no permission) is one line.
    """
    partial = path.parent / f".{path.name}.{secrets.token_hex(6)}.partial{path.suffix}"
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        try:
            yield partial
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None


def write_bytes(path: Path, data: bytes | BinaryIO) -> Path:
    """Write ``data`` (or what a stream holds) to ``path`` whole: a reader sees the old file or
    the new one."""
    with replacing(path) as partial:
        fd = os.open(partial, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                shutil.copyfileobj(data, f)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path``, as ``write_bytes``."""
    return write_bytes(path, text.encode("utf-8"))


def finite(value: Any) -> Any:
    """``value`` with every float that is not finite (NaN, infinity) as None: JSON's null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as valid JSON text: null where a number is not finite, never a bare ``NaN``."""
    return json.dumps(finite(value), indent=indent, allow_nan=False) + "\n"


def write_json(path: Path, value: Any, indent: int | None = 2) -> Path:
    """Write ``value`` to ``path`` as valid JSON (``json_text``), as ``write_bytes``."""
    return write_text(path, json_text(value, indent))
