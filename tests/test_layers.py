"""The layers hold: each subpackage imports only those below it (import-linter's contracts in
``pyproject.toml``), low modules load no heavy package, and the TensorFlow registry shim works."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from search.base.config import Training
from search.learning import _gradients
from search.testing import REPO


def test_the_import_contracts_are_kept():
    lint = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def loaded_after(module: str) -> set[str]:
    """Top-level packages of interest that ``import module`` loads, in a fresh interpreter."""
    code = (f"import sys, {module}; "
            "print(' '.join(m for m in ('tensorflow', 'keras', 'optuna', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module, forbidden", [
    ("search", {"tensorflow", "keras", "optuna", "sqlalchemy"}),
    ("search.base.config", {"tensorflow", "keras", "optuna", "sqlalchemy"}),
    ("search.learning.data", {"tensorflow", "keras", "optuna", "sqlalchemy"}),
    ("search.results.retrain", {"optuna", "tensorflow"}),
])
def test_importing_a_low_layer_loads_no_higher_one(module, forbidden):
    assert loaded_after(module) & forbidden == set()


def test_training_loads_tensorflow_and_nothing_of_optuna_nor_sqlalchemy():
    assert loaded_after("search.learning.training") == {"tensorflow", "keras"}


def tiny_fit(seed: int) -> None:
    import tensorflow as tf

    from search.learning.training import fit, seeded_model

    rng = np.random.default_rng(seed)
    x = tf.constant(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))
    y = tf.constant(rng.integers(0, 10, 64, dtype=np.uint8))
    training = Training(batch_size=32)
    model = seeded_model({"l1": 0.0, "l2": 1e-3, "dropout": 0.5}, training, seed)
    fit(model, (x, y), (x, y), training, epochs=1, callbacks=[])


def test_fits_leave_no_gradient_functions_behind():
    registry = _gradients._registry()
    assert registry is not None, "TensorFlow moved its gradient registry: update search/learning/_gradients.py"
    tiny_fit(0)
    before = len(registry)
    for seed in (1, 2, 3):
        tiny_fit(seed)
    assert len(registry) == before


def test_without_the_registry_training_goes_on_with_one_warning(monkeypatch):
    monkeypatch.setattr(_gradients, "_registry", lambda: None)
    monkeypatch.setattr(_gradients, "_warned", False)
    with pytest.warns(UserWarning, match="gradient registry moved") as caught:
        for seed in (4, 5):
            tiny_fit(seed)
    assert len([w for w in caught if "gradient registry" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once warned, silent
        with _gradients.released_gradients():
            pass
