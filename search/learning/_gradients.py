"""A shim over a private TensorFlow registry that otherwise leaks about 12 MiB per trial."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

_warned = False


def _registry() -> dict | None:
    """TensorFlow's global gradient registry, or None if this TensorFlow keeps it elsewhere."""
    try:
        from tensorflow.python.framework.ops import gradient_registry

        registry = gradient_registry._registry
    except (ImportError, AttributeError):
        return None
    return registry if isinstance(registry, dict) else None


@contextmanager
def released_gradients() -> Iterator[None]:
    """Unregister the gradient functions TensorFlow registers globally while tracing the steps.

    Each traced step adds a ``CustomGradient-N`` entry (tf.distribute's all_reduce) to a registry
    that is never emptied, and it keeps the step's whole graph alive: about 12 MiB per trial.
    They are only looked up while tracing, so once ``fit`` returns they can go. If TensorFlow
    changes the private registry, training goes on as is and this warns once.
    """
    global _warned
    registry = _registry()
    if registry is None:
        if not _warned:
            warnings.warn("TensorFlow's gradient registry moved: memory grows ~12 MiB per trial")
            _warned = True
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for name in set(registry) - before:
            if name.startswith("CustomGradient-"):
                del registry[name]
