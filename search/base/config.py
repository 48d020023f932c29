"""Study configuration: a typed, validated view of a YAML file in ``study_configs/``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from search.base.errors import UsageError
from search.base.files import PathText
from search.base.names import StudyName
from search.base.yamlfile import read_yaml

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what NumPy, Keras and scikit-learn accept
CLASSES = 10
TRAINING_IMAGES = 50_000
# Every whole number has a bound that keeps the program working, checked when the file is read.
Images = Annotated[int, Field(gt=0, le=TRAINING_IMAGES)]
Epochs = Annotated[int, Field(gt=0, le=10_000)]
Trials = Annotated[int, Field(ge=0, le=1_000_000)]  # as many as a command may run (--trials)
Factor = Annotated[int, Field(ge=2, le=100)]
HOUR, WEEK = 3600, 7 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


def _checked(value: Any, info: ValidationInfo) -> Any:
    """The one rule for ``l1``, ``l2`` and ``dropout``, as a range (``Param``) or a point."""
    low, high = value.bounds if isinstance(value, Param) else (value, value)
    if info.field_name == "dropout" and not (0.0 <= low and high < 1.0):
        raise ValueError(f"dropout must lie in [0, 1), got {low if low == high else f'[{low}, {high}]'}")
    if info.field_name != "dropout" and low < 0:
        raise ValueError(f"a penalty cannot be negative ({low})")
    return value


def flag(name: str) -> str:
    """The categorical parameter that turns penalty ``name`` on or off: ``l1_on``."""
    return f"{name}_on"


class Param(_Strict):
    """A hyperparameter: fixed at ``value``, or sampled from ``[low, high]`` (log scale if ``log``).

    With ``off_below`` (log scale only) the penalty may be off: Optuna first chooses
    ``<name>_on`` (True or False), and only when on samples the strength from
    ``[off_below, high]``. Studies stored before that encoding sampled ``[low, high]`` and
    took a value below ``off_below`` as off; ``effective`` reads them so.
    """

    value: float | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    off_below: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.value is not None:
            if self.low is not None or self.high is not None or self.off_below is not None:
                raise ValueError("give either value or low/high (and off_below), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs low and high (or a fixed value)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got low={self.low}")
        if self.off_below is not None:
            if not self.log:
                raise ValueError("off_below needs a log scale (log: true)")
            if not self.low < self.off_below <= self.high:
                raise ValueError(f"off_below ({self.off_below}) must lie in ({self.low}, {self.high}]")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.value, self.value) if self.value is not None else (self.low, self.high)

    @property
    def sampled_bounds(self) -> tuple[float, float]:
        """The range Optuna samples (when on, for a penalty that may be off)."""
        return self.bounds if self.off_below is None else (self.off_below, self.high)

    def effective(self, sampled: float) -> float:
        """The value the model uses: 0 below ``off_below`` (the old encoding), else ``sampled``."""
        return 0.0 if self.off_below is not None and sampled < self.off_below else sampled

    def trial_values(self, name: str, value: float) -> dict[str, float | bool]:
        """The parameters to enqueue that mean ``value`` (0: off); ``ValueError`` if none does."""
        if self.off_below is not None and value == 0:
            return {flag(name): False}
        low, high = self.sampled_bounds
        if low <= value <= high:
            return {flag(name): True, name: value} if self.off_below is not None else {name: value}
        where = f"outside the search space [{low}, {high}]" if low < high else f"not the fixed value {low}"
        if self.off_below is not None:
            where += "; give 0 for off"
        elif value == 0 and self.log:
            where += "; add off_below so that 0 means off"
        raise ValueError(f"{value} is {where}")


class SearchSpace(_Strict):
    """What Optuna samples; l1 and l2 are off (0) in their lowest decade by default."""

    l1: Param = Param(low=1e-7, high=1e-2, log=True, off_below=1e-6)
    l2: Param = Param(low=1e-7, high=1e-2, log=True, off_below=1e-6)
    dropout: Param = Param(low=0.0, high=0.7)

    _values = field_validator("l1", "l2", "dropout")(_checked)

    def effective(self, params: Mapping[str, float | bool]) -> dict[str, float]:
        """Stored parameters (either encoding) or a point -> the values the model uses (0: off)."""
        return {
            name: (params[name] if params[flag(name)] else 0.0)
            if flag(name) in params
            else getattr(self, name).effective(params[name])
            for name in PARAMS
        }

    def trial_params(self, point: Mapping[str, float]) -> dict[str, float | bool]:
        """A point (0 meaning off) -> the parameters to enqueue; ``ValueError`` naming one outside."""
        params = {}
        for name in PARAMS:
            try:
                params.update(getattr(self, name).trial_values(name, point[name]))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return params


PARAMS = tuple(SearchSpace.model_fields)  # ("l1", "l2", "dropout")


class Point(_Strict):
    """One value per hyperparameter, 0 meaning off: the baseline, or an exported trial's."""

    l1: float
    l2: float
    dropout: float

    _values = field_validator("l1", "l2", "dropout")(_checked)


class Data(_Strict):
    """The stratified train/validation split carved from the 50,000 training images."""

    train_size: Images = 45_000
    val_size: Images = 5_000
    split_seed: Seed = 0

    @model_validator(mode="after")
    def _check(self) -> Data:
        for key, size in (("train_size", self.train_size), ("val_size", self.val_size)):
            if size < CLASSES:  # stratified: one image of each class at least
                raise ValueError(f"{key} ({size}) must be at least {CLASSES}, one image per class")
        if self.train_size + self.val_size > TRAINING_IMAGES:
            raise ValueError("train_size + val_size exceeds the 50,000 training images")
        return self


class Training(_Strict):
    epochs: Epochs = 20
    batch_size: Images = 32
    learning_rate: Annotated[float, Field(gt=0)] = 0.001
    regularize_conv: bool = False


class TPE(_Strict):
    name: Literal["tpe"] = "tpe"
    n_startup_trials: Annotated[Trials, Field(gt=0)] = 10
    multivariate: bool = True
    constant_liar: bool = True


class RandomSampler(_Strict):
    name: Literal["random"]


class MedianPruner(_Strict):
    name: Literal["median"] = "median"
    n_startup_trials: Trials = 5
    n_warmup_steps: Annotated[int, Field(ge=0, le=10_000)] = 3  # epochs


class HyperbandPruner(_Strict):
    name: Literal["hyperband"]
    min_resource: Epochs = 1
    reduction_factor: Factor = 3


class SuccessiveHalvingPruner(_Strict):
    name: Literal["successive_halving"] = "successive_halving"
    min_resource: Epochs = 1
    reduction_factor: Factor = 4


class NoPruner(_Strict):
    name: Literal["none"]


Sampler = Annotated[Union[TPE, RandomSampler], Field(discriminator="name")]
Pruner = Annotated[
    Union[MedianPruner, HyperbandPruner, SuccessiveHalvingPruner, NoPruner],
    Field(discriminator="name"),
]


class Storage(_Strict):
    heartbeat_interval: Annotated[int, Field(gt=0, le=HOUR)] = 30  # seconds
    grace_period: Annotated[int, Field(gt=0, le=WEEK)] = 90  # seconds
    max_retry: Annotated[int, Field(ge=0, le=100)] = 2
    artifacts: PathText = "storage/artifacts"

    @model_validator(mode="after")
    def _check(self) -> Storage:
        if self.grace_period < 2 * self.heartbeat_interval:  # Optuna's own default is 2x
            raise ValueError(f"grace_period ({self.grace_period} s) must be at least 2 x heartbeat_interval "
                             f"({self.heartbeat_interval} s), or live trials are failed as stale")
        return self


class StudyConfig(_Strict):
    """Everything that defines a study; ``fingerprint()`` is what must not change on resume."""

    study_name: StudyName  # it names files and folders
    seed: Seed = 0
    search_space: SearchSpace = SearchSpace()
    baseline: Point | None = Point(l1=0.0, l2=0.001, dropout=0.5)  # the tutorial's; first trial
    data: Data = Data()
    training: Training = Training()
    sampler: Sampler = TPE()
    pruner: Pruner = SuccessiveHalvingPruner()  # chosen by bench.replay
    storage: Storage = Storage()

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        """Checks across sections; their messages name their keys."""
        if self.training.batch_size > self.data.train_size:
            raise ValueError(f"training.batch_size ({self.training.batch_size}) is larger than "
                             f"data.train_size ({self.data.train_size})")
        if self.baseline is not None:
            try:
                self.search_space.trial_params(self.baseline.model_dump())
            except ValueError as exc:
                raise ValueError(f"baseline.{exc}, or use baseline: null") from None
        return self

    def fingerprint(self) -> dict[str, Any]:
        """The parts that give a trial's value its meaning; a resumed study must match them."""
        return self.model_dump(mode="json", include={"search_space", "data", "training"})


_TAGS = {"tpe", "random", "median", "hyperband", "successive_halving", "none"}


def first_error(exc: ValidationError) -> str:
    """A pydantic error in one line: ``key: problem``, or just the problem if it names its keys."""
    error = exc.errors()[0]
    key = ".".join(str(p) for p in error["loc"] if p not in _TAGS)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"].endswith("_type") and error["type"] not in ("model_type", "dict_type"):
        message = f"{message}, got {_given(error['input'])}"  # strict: "1" is no number
    elif error["type"] == "union_tag_invalid":
        message = f"unknown name {error['ctx']['tag']!r} (choose {error['ctx']['expected_tags']})"
    return f"{key}: {message}" if key else message


def _given(value: Any) -> str:
    """``str '1'``, ``bool True``: the wrong-typed value a strict check refused, shortened."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def parse_config(raw: Any, source: str) -> StudyConfig:
    """Validate a mapping, raising ``UsageError`` with one line naming source, key and problem."""
    if not isinstance(raw, dict):
        got = "nothing" if raw is None else type(raw).__name__
        raise UsageError(f"{source}: expected a mapping of settings, got {got}")
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(f"{source}: {first_error(exc)}") from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study config file."""
    path = Path(path)
    return parse_config(read_yaml(path), str(path))


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def model_values(trial: FrozenTrial) -> dict[str, float]:
    """The values the model used (0: off): user attr ``effective_params``, else the parameters
    read as the search space stores them (``<name>_on`` False: off)."""
    values = trial.user_attrs.get("effective_params")
    if isinstance(values, dict) and all(_number(values.get(p)) for p in PARAMS):
        return {p: values[p] for p in PARAMS}
    params = trial.params
    return {
        name: 0.0 if params.get(flag(name)) is False else params[name]
        for name in PARAMS
        if params.get(flag(name)) is False or _number(params.get(name))
    }


def shown_params(trial: FrozenTrial) -> str:
    """``l1 off, l2 0.001, dropout 0.5``: the values the model used (``model_values``)."""
    values = model_values(trial)
    shown = [
        f"{name} off" if values[name] == 0 and name != "dropout" else f"{name} {values[name]:.3g}"
        for name in PARAMS
        if _number(values.get(name))
    ]
    return ", ".join(shown) or "no parameters yet"


def trial_label(trial: FrozenTrial) -> str:
    """``trial 7``, ``trial 0 (baseline)``, or for a run of ``make confirm`` (user attrs
    ``source_trial``, ``seed_index``): ``confirmation run 3 (search trial 7, seed 2 of 3)``."""
    attrs = trial.user_attrs
    index = attrs.get("seed_index")
    if type(index) is not int:
        return f"trial {trial.number}" + (" (baseline)" if attrs.get("baseline") is True else "")
    source = attrs.get("source_trial")
    what = ["baseline"] if attrs.get("baseline") is True else []
    if type(source) is int:
        what.append(f"search trial {source}")
    seeds = attrs.get("seeds")
    what.append(f"seed {index + 1}" + (f" of {seeds}" if type(seeds) is int else ""))
    return f"confirmation run {trial.number} ({', '.join(what)})"
