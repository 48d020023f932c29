"""``retrain``: the final model from an export, trained for its best epoch count, tested once;
the baseline beside it, and both over several seeds if asked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError

from search.base.config import Point, Seed, StudyConfig, first_error, parse_config
from search.base.errors import UsageError
from search.base.names import StudyName, inside
from search.base.paths import EXPORTS
from search.base.stats import describe_gain, describe_spread, gain, spread
from search.base.yamlfile import read_yaml

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class Baseline(_Read):
    """The baseline in ``best.yaml``: its point, and its trial's epochs and seed if it ran."""

    trial: int | None = None
    best_epoch: PositiveInt | None = None
    seed: Seed | None = None
    params: Point


class Export(_Read):
    """The part of ``best.yaml`` that retraining reads."""

    study_name: StudyName
    trial: int
    value: float
    best_epoch: PositiveInt
    seed: Seed
    params: Point  # checked as the search space is: finite, known names, allowed values
    config: dict[str, Any]
    baseline: Baseline | None = None  # exports from before baselines have none


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
    path = inside(EXPORTS, study_name) / "best.yaml"
    if not path.is_file():
        raise UsageError(f"{path}: no export of this study yet (run make export first)")
    return path


def _tensors(xy: tuple[np.ndarray, np.ndarray] | None) -> tuple[tf.Tensor, tf.Tensor] | None:
    import tensorflow as tf

    return None if xy is None else (tf.constant(xy[0]), tf.constant(xy[1]))


def _train(
    config: StudyConfig, point: Point, epochs: int, seed: int, data: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """One training of ``point`` with ``seed``, tested once: the model and what the run gives."""
    import keras

    from search.learning.training import fit, seeded_model

    model = seeded_model(config.search_space.effective(point.model_dump()), config.training, seed)
    history = keras.callbacks.History()
    fit(model, data["train"], data["val"], config.training, epochs, [history], verbose=2)
    test_loss, test_accuracy = model.evaluate(data["test"], verbose=0)
    last = {key: values[-1] for key, values in history.history.items()}
    return model, {"seed": seed, "epochs": epochs, "test_accuracy": float(test_accuracy),
                   "test_loss": float(test_loss), "val_accuracy": last.get("val_accuracy"),
                   "val_loss": last.get("val_loss"), "history": history.history}


def retrain(
    path: Path, data_dir: str | None, full: bool = False, seeds: int = 1, baseline: bool = True
) -> dict[str, Any]:
    """Retrain the exported trial and the baseline ``seeds`` times each, each tested once, and
    write the files beside the export.

    Each trains for its trial's best epoch count on the study's training split (on all training
    images if ``full``); the first seed is its trial's own, the others are fresh (from the study
    seed). The chosen config's first run gives ``model.keras``, ``history.json`` and
    ``curves.png``; ``metrics.json`` has every run, mean ± std of both, and the gain.
    """
    from search.base.seeds import RETRAIN_STREAM, derive_seed
    from search.learning.data import load_test, load_train, resolve_data_dir, split
    from search.learning.training import make_dataset
    from search.tuning.artifacts import plot_curves

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
    test = make_dataset(*_tensors((x_test, y_test)), config.training.batch_size)
    data = {"train": _tensors(train), "val": _tensors(val), "test": test}

    configs = {"chosen": (export.trial, export.params, export.best_epoch, export.seed)}
    if baseline and export.baseline is not None:
        b = export.baseline
        configs["baseline"] = (b.trial, b.params, b.best_epoch or config.training.epochs, b.seed)
    start, out, results = time.perf_counter(), path.parent, {}
    for role, (name, (trial, point, epochs, first_seed)) in enumerate(configs.items()):
        runs = []
        for i in range(seeds):
            fresh = i > 0 or first_seed is None
            seed = derive_seed(config.seed, role, i, RETRAIN_STREAM) if fresh else first_seed
            model, run = _train(config, point, epochs, seed, data)
            if name == "chosen" and i == 0:  # the model kept
                model.save(out / "model.keras")
                (out / "history.json").write_text(json.dumps(run["history"], indent=1))
                title = f"{export.study_name} trial {export.trial} retrained{' (full)' if full else ''}"
                plot_curves(run["history"], out / "curves.png", title)
            runs.append(run)
        accuracies = [r["test_accuracy"] for r in runs]
        results[name] = {"trial": trial, "params": point.model_dump(), "epochs": epochs,
                         "seeds": [r["seed"] for r in runs], "test_accuracy": accuracies,
                         **spread(accuracies), "runs": runs}
    first = results["chosen"]["runs"][0]
    metrics = {
        "study_name": export.study_name,
        "trial": export.trial,
        "trial_val_accuracy": export.value,
        "full": full,
        "train_images": len(train[0]),
        "epochs": export.best_epoch,
        "seed": first["seed"],
        "val_accuracy": first["val_accuracy"],
        "val_loss": first["val_loss"],
        "test_images": len(x_test),
        "test_accuracy": first["test_accuracy"],
        "test_loss": first["test_loss"],
        "seconds": round(time.perf_counter() - start, 2),
        "seeds": seeds,
        "chosen": results["chosen"],
        "baseline": results.get("baseline"),
        "gain": gain(results["chosen"]["test_accuracy"], results["baseline"]["test_accuracy"])
        if "baseline" in results else None,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def describe_metrics(metrics: dict[str, Any]) -> str:
    """What ``retrain`` found, in the lines it prints."""
    val = (
        "no validation set (FULL=1)"
        if metrics["val_accuracy"] is None
        else f"val_accuracy {metrics['val_accuracy']:.4f}"
    )
    lines = [
        f"test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) "
        f"after {metrics['epochs']} epochs on {metrics['train_images']:,} images; {val}; "
        f"the search's trial {metrics['trial']} had "
        f"val_accuracy {metrics['trial_val_accuracy']:.4f}"
    ]
    for name in ("chosen", "baseline"):
        if (result := metrics[name]) is not None:
            lines.append(f"{name} (trial {result['trial']}): test accuracy "
                         f"{describe_spread(result['test_accuracy'])}")
    if metrics["gain"] is None:
        lines.append("baseline: not trained (--no-baseline, or the export has none)")
    else:
        interval = "" if metrics["gain"]["low"] is not None else " (no interval: SEEDS=2 or more gives one)"
        lines.append(f"gain over the baseline: {describe_gain(metrics['gain'])}{interval}")
    return "\n".join(lines)
