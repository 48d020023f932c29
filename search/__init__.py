"""Hyperparameter search for the regularized CIFAR-10 CNN: Optuna, Keras and SQL storage.

The command line (``python -m search``) is the main entry point; the same steps from Python::

    from search import load_config, run_search
    run_search(load_config("study_configs/smoke.yaml"), trials=5, data_dir="cifar-10-batches-py")
"""

from search.config import StudyConfig, load_config
from search.errors import UsageError
from search.runner import run_search

__all__ = ["StudyConfig", "UsageError", "load_config", "run_search"]
