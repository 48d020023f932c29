"""``retrain``: the final model from an export, trained for its best epoch count, tested once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError

from search.config import Point, Seed, first_error, parse_config
from search.errors import UsageError
from search.export import EXPORTS
from search.yamlfile import read_yaml

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf


class Export(BaseModel):
    """The part of ``best.yaml`` that retraining reads."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    study_name: str
    trial: int
    value: float
    best_epoch: PositiveInt
    seed: Seed
    params: Point  # checked as the search space is: finite, known names, allowed values
    config: dict[str, Any]


def _read_yaml(path: Path) -> Any:
    return read_yaml(path, missing="no such file (export one with make export)")


def read_export(path: Path) -> Export:
    try:
        return Export.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise UsageError(f"{path}: not an export ({first_error(exc)})") from None


def resolve_export(path: str | Path | None, study_name: str | None = None) -> Path:
    """``path`` if it is an export; for a study config (or none), ``exports/<study>/best.yaml``."""
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        if not isinstance(raw, dict) or "params" in raw:
            return path
        try:
            study_name = study_name or parse_config(raw, str(path)).study_name
        except UsageError as exc:
            raise UsageError(f"not an export (no params), nor a study config: {exc}") from None
    assert study_name is not None, "a study config or a study name"
    path = EXPORTS / study_name / "best.yaml"
    if not path.is_file():
        raise UsageError(f"{path}: no export of this study yet (run make export first)")
    return path


def _tensors(xy: tuple[np.ndarray, np.ndarray] | None) -> tuple[tf.Tensor, tf.Tensor] | None:
    import tensorflow as tf

    return None if xy is None else (tf.constant(xy[0]), tf.constant(xy[1]))


def retrain(path: Path, data_dir: str | None, full: bool = False) -> dict[str, Any]:
    """Retrain the exported trial, test it once, and write its files beside the export.

    Trains with the trial's parameters and seed, for its best epoch count, on the study's
    training split (on all training images if ``full``), then writes ``model.keras``,
    ``history.json``, ``curves.png`` and ``metrics.json``.
    """
    import keras

    from search.artifacts import plot_curves
    from search.data import load_test, load_train, resolve_data_dir, split
    from search.training import fit, make_dataset, seeded_model

    export = read_export(path)
    # An export from before baselines has none; retraining does not need one.
    raw = {"baseline": None, **export.config, "study_name": export.study_name}
    config = parse_config(raw, f"{path}: config")
    folder = resolve_data_dir(data_dir)
    x, y = load_train(folder)
    if full:
        train, val = (x, y), None
    else:
        s = split(x, y, config.data)
        train, val = (s.x_train, s.y_train), (s.x_val, s.y_val)
    x_test, y_test = load_test(folder)
    training = config.training

    start = time.perf_counter()
    params = config.search_space.effective(export.params.model_dump())  # below off_below: 0
    model = seeded_model(params, training, export.seed)
    history = keras.callbacks.History()
    fit(model, _tensors(train), _tensors(val), training, export.best_epoch, [history], verbose=2)
    test = make_dataset(*_tensors((x_test, y_test)), training.batch_size)
    test_loss, test_accuracy = model.evaluate(test, verbose=0)
    seconds = time.perf_counter() - start

    out = path.parent
    model.save(out / "model.keras")
    (out / "history.json").write_text(json.dumps(history.history, indent=1))
    title = f"{export.study_name} trial {export.trial} retrained{' (full)' if full else ''}"
    plot_curves(history.history, out / "curves.png", title)
    metrics = {
        "study_name": export.study_name,
        "trial": export.trial,
        "trial_val_accuracy": export.value,
        "full": full,
        "train_images": len(train[0]),
        "epochs": export.best_epoch,
        "seed": export.seed,
        "val_accuracy": None if full else history.history["val_accuracy"][-1],
        "val_loss": None if full else history.history["val_loss"][-1],
        "test_images": len(x_test),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "seconds": round(seconds, 2),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def describe(metrics: dict[str, Any]) -> str:
    val = (
        "no validation set (FULL=1)"
        if metrics["val_accuracy"] is None
        else f"val_accuracy {metrics['val_accuracy']:.4f}"
    )
    return (
        f"test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) "
        f"after {metrics['epochs']} epochs on {metrics['train_images']:,} images; {val}; "
        f"the search's trial {metrics['trial']} had "
        f"val_accuracy {metrics['trial_val_accuracy']:.4f}"
    )
