"""Choose the pruner by replaying Optuna's pruners over recorded learning curves, without training.

``python -m bench.replay record --storage URL --study NAME --out FILE`` writes the full curves
(validation accuracy per epoch) of an unpruned study's complete trials as small JSON.
``python -m bench.replay replay FILE`` replays each pruner setting of a grid over those curves in
several seeded trial orders and chooses the cheapest setting whose best kept trial, in every order,
lies within ``--tolerance`` of the best overall: regret smaller than the seed-to-seed noise of a
trial's value cannot be told from luck (which of the top 3 is pruned is reported, not decisive).
"""

from __future__ import annotations

import json
import math
import random
import sys
from argparse import ArgumentTypeError
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Sequence

import optuna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from search.base import config as cfg
from search.base.arguments import Parser, positive
from search.base.errors import UsageError
from search.tuning.storage import open_storage
from search.tuning.study import make_pruner, stored_config

TOP = 3
ORDERS = 20
# A loss smaller than the seed-to-seed std of a trial's best validation accuracy on full data is
# not a regret: `make confirm` measured 0.0044-0.0057 over 6 seeds for three configurations
# (docs/measured.md); 0.004 is the stricter, lower end.
TOLERANCE = 0.004
# Written as `pruner:` entries of a study config, so each is exactly what a study would run.
GRID: list[cfg.Pruner] = [TypeAdapter(cfg.Pruner).validate_python(pruner) for pruner in (
    {"name": "none"},
    *({"name": "median", "n_startup_trials": s, "n_warmup_steps": w} for s in (5, 10) for w in (1, 3, 5, 8, 10)),
    *({"name": name, "min_resource": m, "reduction_factor": r}
      for name in ("successive_halving", "hyperband") for m in (1, 2, 4, 6) for r in (3, 4)),
)]


class Curve(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    number: NonNegativeInt
    params: dict[str, float]
    val_accuracy: list[Annotated[float, Field(ge=0, le=1)]]


class Curves(BaseModel):
    """A curves file: where they come from, the study config, and one full curve per trial."""

    model_config = ConfigDict(extra="forbid")

    source: str
    config: dict[str, Any]
    epochs: PositiveInt
    trials: list[Curve] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Curves:
        for trial in self.trials:
            if len(trial.val_accuracy) != self.epochs:
                raise ValueError(f"trial {trial.number} has {len(trial.val_accuracy)} values, "
                                 f"not {self.epochs}")
        if len({t.number for t in self.trials}) != len(self.trials):
            raise ValueError("trial numbers repeat")
        return self


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(map(str, error["loc"])) or "(top level)"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


def label(pruner: cfg.Pruner) -> str:
    """``median(n_startup_trials=5, n_warmup_steps=3)``, ``none``."""
    settings = ", ".join(f"{k}={v}" for k, v in pruner.model_dump().items() if k != "name")
    return f"{pruner.name}({settings})" if settings else pruner.name


def record(url: str, study_name: str) -> Curves:
    """The curves of a study's complete trials that reported every epoch (storage read only)."""
    storage = open_storage(url, read_only=True)
    config = stored_config(storage, study_name)
    if not isinstance(config.pruner, cfg.NoPruner):
        raise UsageError(f"study {study_name!r} ran the {config.pruner.name} pruner: its complete trials are "
                         "survivors, not a sample; record a study run with pruner none")
    epochs = config.training.epochs
    study = storage.load(study_name)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    full = [t for t in complete if len(t.intermediate_values) == epochs  # one report per epoch
            and all(map(math.isfinite, t.intermediate_values.values()))]
    if not full:
        raise UsageError(f"study {study_name!r} has no complete trial with all {epochs} epochs reported")
    trials = [{"number": t.number, "params": t.params,
               "val_accuracy": [round(t.intermediate_values[s], 6) for s in sorted(t.intermediate_values)]}
              for t in full]
    source = (f"study {study_name!r} in {storage.masked}: {len(full)} of its {len(complete)} complete trials "
              f"(all {epochs} epochs reported), recorded {date.today()} by bench.replay")
    definition = config.model_dump(mode="json", exclude={"storage"})  # no machine-local folders
    raw = {"source": source, "config": definition, "epochs": epochs, "trials": trials}
    try:
        return Curves.model_validate(raw)
    except ValidationError as exc:  # e.g. a categorical parameter in a foreign study
        raise UsageError(f"study {study_name!r}: {_one_line(exc)}") from None


def save(curves: Curves, path: Path) -> None:
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: folder {path.parent} does not exist")
    try:
        path.write_text(curves.model_dump_json(indent=1) + "\n")
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write ({exc.strerror})") from None


def load(path: Path) -> Curves:
    """Read a curves file as data (JSON, validated); a bad one is a one-line ``UsageError``."""
    try:
        return Curves.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except ValidationError as exc:
        raise UsageError(f"{path}: {_one_line(exc)}") from None


def replay_order(pruner: cfg.Pruner, curves: Sequence[Curve], epochs: int) -> tuple[int, set[int]]:
    """One in-memory study over ``curves`` in this order, as the Keras callback reports them.

    Returns the epochs trained and the numbers of the trials pruned.
    """
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0),
                                pruner=make_pruner(pruner, epochs))
    spent, pruned = 0, set()
    for curve in curves:
        fixed = {name: optuna.distributions.FloatDistribution(v, v) for name, v in curve.params.items()}
        trial = study.ask(fixed)
        for step, value in enumerate(curve.val_accuracy, start=1):  # epochs, as the objective reports
            trial.report(value, step)
            spent += 1
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned.add(curve.number)
                break
        else:
            study.tell(trial, max(curve.val_accuracy))  # the objective returns the best epoch's value
    return spent, pruned


def evaluate(pruner: cfg.Pruner, curves: Curves, orders: int) -> dict[str, Any]:
    """Epochs spent (fraction of no pruning, mean over orders) and regret over ``orders`` orders."""
    best = {t.number: max(t.val_accuracy) for t in curves.trials}
    top = set(sorted(best, key=best.__getitem__, reverse=True)[:TOP])
    fractions, top_pruned, gaps = [], 0, []
    for seed in range(orders):
        order = random.Random(seed).sample(curves.trials, len(curves.trials))
        spent, pruned = replay_order(pruner, order, curves.epochs)
        fractions.append(spent / (len(order) * curves.epochs))
        top_pruned += bool(top & pruned)
        # The first trial of an order is never pruned (nothing to compare with), so one is kept.
        gaps.append(max(v for n, v in best.items() if n not in pruned) - max(best.values()))
    return {"setting": label(pruner), "pruner": pruner.model_dump(),
            "epochs_fraction": round(sum(fractions) / orders, 4),
            "top_pruned_orders": top_pruned, "worst_gap": round(min(gaps), 6)}


def run(curves: Curves, orders: int = ORDERS, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Every setting of ``GRID``, and the cheapest whose worst gap is within ``tolerance``.

    ``none`` has no gap, so there is always a choice.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = [evaluate(pruner, curves, orders) for pruner in GRID]
    safe = [s for s in settings if s["worst_gap"] >= -tolerance]
    chosen = min(safe, key=lambda s: s["epochs_fraction"])["setting"]  # ties: the first in GRID
    return {"source": curves.source, "trials": len(curves.trials), "epochs": curves.epochs,
            "orders": orders, "top": TOP, "tolerance": tolerance, "settings": settings, "chosen": chosen}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(setting, epochs fraction, top-3 pruned in k/N orders, worst best-kept gap)."""
    return [(s["setting"] + (" (chosen)" if s["setting"] == result["chosen"] else ""),
             f"{s['epochs_fraction']:.3f}", f"{s['top_pruned_orders']}/{result['orders']}",
             f"{s['worst_gap']:+.4f}") for s in result["settings"]]


def markdown(result: dict[str, Any]) -> str:
    head = ("setting", "epochs fraction", f"top-{result['top']} pruned in orders", "worst best-kept gap")
    body = [head, *rows(result)]
    widths = [max(len(row[i]) for row in body) for i in range(4)]
    body.insert(1, tuple("-" * w for w in widths))
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in body]
    return "\n".join([*lines, "", f"{result['trials']} curves of {result['epochs']} epochs, "
                      f"{result['orders']} orders; chosen (cheapest with every gap within "
                      f"{result['tolerance']:.4f}): {result['chosen']}"])


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:  # NaN fails too
        raise ArgumentTypeError(f"{text!r} is not an accuracy difference in [0, 1)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="write a curves file from a study")
    rec.add_argument("--storage", required=True, help="SQLAlchemy URL of the study's storage")
    rec.add_argument("--study", required=True, help="study name")
    rec.add_argument("--out", required=True, type=Path, help="curves file to write (JSON)")
    rep = commands.add_parser("replay", help="replay the pruner grid over a curves file")
    rep.add_argument("file", type=Path, help="curves file (JSON)")
    rep.add_argument("--orders", type=positive, default=ORDERS, help=f"trial orders (default {ORDERS})")
    rep.add_argument("--tolerance", type=_tolerance, default=TOLERANCE,
                     help=f"largest loss of the best kept trial that is not a regret (default {TOLERANCE})")
    rep.add_argument("--json", action="store_true", help="machine output")
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            curves = record(args.storage, args.study)
            save(curves, args.out)
            print(f"{len(curves.trials)} curves of {curves.epochs} epochs written to {args.out}")
        else:
            result = run(load(args.file), args.orders, args.tolerance)
            print(json.dumps(result, indent=1) if args.json else markdown(result))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
