"""Hyperparameter search for the regularized CIFAR-10 CNN: Optuna, Keras and SQL storage.

The command line (``python -m search``) is the main entry point; the same steps from Python::

    from search import SearchRequest, load_config, run_search
    run_search(SearchRequest(load_config("study_configs/smoke.yaml"), trials=5, data_dir="cifar-10-batches-py"))

The public names load their modules on first use (PEP 562), so that importing a low layer such
as ``search.base.config`` loads neither TensorFlow nor Optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.base.config import StudyConfig, load_config
    from search.base.errors import UsageError
    from search.running.runner import SearchRequest, run_search

_PUBLIC = {
    "StudyConfig": "search.base.config",
    "load_config": "search.base.config",
    "UsageError": "search.base.errors",
    "run_search": "search.running.runner",
    "SearchRequest": "search.running.runner",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
