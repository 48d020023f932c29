"""TensorFlow's C++ start-up lines (absl, oneDNN, CUDA) kept off the terminal unless asked for.

``set_verbosity`` runs before TensorFlow loads; worker processes inherit its environment.
Some lines are written by absl before any setting can act, so ``import_tensorflow`` sends
file descriptor 2 to ``/dev/null`` for the import only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE = "SEARCH_VERBOSE"  # "1": show everything (``-v``, ``VERBOSE=1``)
QUIET = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ logging: fatal errors only
    "TF_CPP_MAX_VLOG_LEVEL": "-1",
    "GLOG_minloglevel": "3",
    "ABSL_MIN_LOG_LEVEL": "3",
}


def set_verbosity(verbose: bool) -> None:
    """Show TensorFlow's native log lines (``verbose``) or only its fatal errors."""
    if verbose:
        os.environ[VERBOSE] = "1"
    if os.environ.get(VERBOSE) != "1":
        os.environ.update(QUIET)  # over any inherited setting: -v is the way to see them


def verbose() -> bool:
    """Whether everything is to be shown (``-v``, ``VERBOSE=1``)."""
    return os.environ.get(VERBOSE) == "1"


@contextmanager
def stderr_to_devnull() -> Iterator[None]:
    """Inside, whatever writes to file descriptor 2 (C++ included) writes to ``/dev/null``."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow() -> None:
    """Load TensorFlow now, without the lines absl writes before its logging is set up."""
    if "tensorflow" in sys.modules or os.environ.get(VERBOSE) == "1":
        import tensorflow  # noqa: F401
        return
    with stderr_to_devnull():
        import tensorflow
    tensorflow.get_logger().setLevel(logging.ERROR)  # e.g. retracing notes: each trial builds anew
