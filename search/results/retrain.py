"""``retrain``: the final model from an export, trained for its best epoch count, tested once;
the baseline beside it, and both over several seeds if asked."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from search.base.config import Point, Seed, StudyConfig, first_error, parse_config
from search.base.errors import UsageError
from search.base.files import finite, replacing, write_json
from search.base.names import StudyName, inside
from search.base.paths import EXPORTS
from search.base.stats import describe_gain, describe_spread, gain, rounded, spread
from search.base.yamlfile import read_yaml

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, strict=True)


class Baseline(_Read):
    """The baseline in ``best.yaml``: its point, and its trial's epochs and seed if it ran."""

    trial: int | None = None
    best_epoch: PositiveInt | None = None
    seed: Seed | None = None
    params: Point


class DataRecord(_Read):
    """The study's training data as its export records it (``search.learning.data.fingerprint``)."""

    images: PositiveInt
    per_class: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=10, max_length=10)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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
    data: DataRecord | None = None  # the study's training data; None in older exports


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
    """One training of ``point`` with ``seed``, tested once: the model and what the run gives.
    Keras prints its epoch lines only when asked (``VERBOSE=1``)."""
    import keras

    from search.learning.quiet import verbose
    from search.learning.training import fit, seeded_model

    model = seeded_model(config.search_space.effective(point.model_dump()), config.training, seed)
    history = keras.callbacks.History()
    fit(model, data["train"], data["val"], config.training, epochs, [history], verbose=2 if verbose() else 0)
    test_loss, test_accuracy = model.evaluate(data["test"], verbose=0)
    last = {key: rounded(values[-1]) for key, values in history.history.items()}
    losses = [float(test_loss), *history.history.get("loss", [])]
    return model, {"seed": seed, "epochs": epochs, "diverged": not all(map(math.isfinite, losses)),
                   "test_accuracy": rounded(float(test_accuracy)), "test_loss": rounded(float(test_loss)),
                   "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
                   "history": history.history}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Test accuracy per run (None where it diverged), and the mean and std of the others."""
    accuracies = [None if r["diverged"] else r["test_accuracy"] for r in runs]
    kept = [a for a in accuracies if a is not None]
    return {"test_accuracy": accuracies, "diverged": len(runs) - len(kept),
            **(spread(kept) if kept else {"mean": None, "std": None})}


def check_data(export: Export, path: Path, found: dict[str, Any]) -> None:
    """That the training images are those the study searched on, as its export records."""
    from search.learning.data import other_data

    if export.data is None:
        print(f"warning: {path} records no training data (exported before it did, or the study "
              "never recorded any): DATA_DIR is not checked against the search's", file=sys.stderr)
    elif export.data.model_dump() != found:
        raise UsageError(
            f"{path}: study {export.study_name!r} was {other_data(export.data.model_dump(), found)}; "
            "use the original data"
        )


def run_label(name: str, trial: int | None, index: int, seeds: int) -> str:
    """``chosen (search trial 7), seed 2 of 3``: which configuration a run trains."""
    which = "" if trial is None else f" (search trial {trial})"
    return f"{name}{which}, seed {index + 1} of {seeds}"


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
    from search.learning.data import fingerprint, load_test, load_train, resolve_data_dir, split
    from search.learning.training import make_dataset
    from search.tuning.artifacts import plot_curves

    export = read_export(path)
    # An export from before baselines has none; retraining does not need one.
    raw = {"baseline": None, **export.config, "study_name": export.study_name}
    config = parse_config(raw, f"{path}: config")
    folder = resolve_data_dir(data_dir)
    x, y = load_train(folder)
    check_data(export, path, fingerprint(x, y))
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
            label = run_label(name, trial, i, seeds)
            print(f"{label}: training {epochs} epochs on {len(train[0]):,} images (seed {seed})", flush=True)
            model, run = _train(config, point, epochs, seed, data)
            told = "diverged (the loss is not finite)" if run["diverged"] else f"test accuracy {run['test_accuracy']:.4f}"
            print(f"{label}: {told}", flush=True)
            if name == "chosen" and i == 0:  # the model kept
                with replacing(out / "model.keras") as partial:
                    model.save(partial)
                write_json(out / "history.json", run["history"], indent=1)
                title = f"{export.study_name} trial {export.trial} retrained{' (full)' if full else ''}"
                with replacing(out / "curves.png") as partial:
                    plot_curves(run["history"], partial, title)
            runs.append(run)
        results[name] = {"trial": trial, "params": point.model_dump(), "epochs": epochs,
                         "seeds": [r["seed"] for r in runs], **_summary(runs), "runs": runs}
    first = results["chosen"]["runs"][0]
    base = results.get("baseline")
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
        "diverged": first["diverged"],
        "test_accuracy": first["test_accuracy"],
        "test_loss": first["test_loss"],
        "seconds": round(time.perf_counter() - start, 2),
        "seeds": seeds,
        "chosen": results["chosen"],
        "baseline": base,
        "gain": _gain(results["chosen"], base) if base is not None else None,
    }
    write_json(out / "metrics.json", metrics)
    return finite(metrics)  # as the file has it: null where a figure is not finite


def _gain(chosen: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any] | None:
    """The gain over the runs that did not diverge; None if either config has none."""
    mine, theirs = ([a for a in r["test_accuracy"] if a is not None] for r in (chosen, baseline))
    return gain(mine, theirs) if mine and theirs else None


DIVERGED = "diverged (the loss is not finite): no result"


def _accuracies(result: dict[str, Any]) -> str:
    """``test accuracy 0.6521 ± 0.0040 (3 runs)``, and how many runs diverged."""
    kept = [a for a in result["test_accuracy"] if a is not None]
    if not kept:
        return f"every run {DIVERGED}"
    left_out = f"; {result['diverged']} more {DIVERGED}, left out" if result["diverged"] else ""
    return f"test accuracy {describe_spread(kept)}{left_out}"


def describe_metrics(metrics: dict[str, Any]) -> str:
    """What ``retrain`` found, in the lines it prints."""
    trained = f"after {metrics['epochs']} epochs on {metrics['train_images']:,} images"
    if metrics["diverged"]:  # its accuracies are chance, not a result
        tested = f"the kept model {DIVERGED} {trained}"
    else:
        val = ("no validation set (FULL=1)" if metrics["val_accuracy"] is None
               else f"val_accuracy {metrics['val_accuracy']:.4f}")
        tested = f"test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) {trained}; {val}"
    lines = [
        f"{tested}; "
        f"the search's trial {metrics['trial']} had "
        f"val_accuracy {metrics['trial_val_accuracy']:.4f}"
    ]
    for name in ("chosen", "baseline"):
        if (result := metrics[name]) is not None:
            lines.append(f"{name} (search trial {result['trial']}): {_accuracies(result)}")
    if metrics["baseline"] is None:
        lines.append("baseline: not trained (--no-baseline, or the export has none)")
    elif metrics["gain"] is None:
        lines.append("gain over the baseline: undefined (every run of one of them diverged)")
    else:
        interval = "" if metrics["gain"]["low"] is not None else " (no interval: SEEDS=2 or more gives one)"
        lines.append(f"gain over the baseline: {describe_gain(metrics['gain'])}{interval}")
    return "\n".join(lines)
