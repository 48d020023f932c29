"""Study configuration: a typed, validated view of a YAML file in ``study_configs/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from search.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Strict):
    """A hyperparameter: fixed at ``value``, or sampled from ``[low, high]`` (log scale if ``log``)."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.value is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either value or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs low and high (or a fixed value)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got low={self.low}")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.value, self.value) if self.value is not None else (self.low, self.high)


class SearchSpace(_Strict):
    l1: Param = Param(low=1e-6, high=1e-2, log=True)
    l2: Param = Param(low=1e-6, high=1e-2, log=True)
    dropout: Param = Param(low=0.0, high=0.7)

    @field_validator("l1", "l2")
    @classmethod
    def _non_negative(cls, param: Param) -> Param:
        if param.bounds[0] < 0:
            raise ValueError(f"a penalty cannot be negative ({param.bounds[0]})")
        return param

    @field_validator("dropout")
    @classmethod
    def _rate(cls, param: Param) -> Param:
        low, high = param.bounds
        if not (0.0 <= low and high < 1.0):
            raise ValueError(f"dropout must lie in [0, 1), got {low}..{high}")
        return param


PARAMS = tuple(SearchSpace.model_fields)  # ("l1", "l2", "dropout")


class Data(_Strict):
    """The stratified train/validation split carved from the 50,000 training images."""

    train_size: PositiveInt = 45_000
    val_size: PositiveInt = 5_000
    split_seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> Data:
        if self.train_size + self.val_size > 50_000:
            raise ValueError("train_size + val_size exceeds the 50,000 training images")
        return self


class Training(_Strict):
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 32
    learning_rate: Annotated[float, Field(gt=0)] = 0.001
    regularize_conv: bool = False


class TPE(_Strict):
    name: Literal["tpe"] = "tpe"
    n_startup_trials: PositiveInt = 10
    multivariate: bool = True
    constant_liar: bool = True


class RandomSampler(_Strict):
    name: Literal["random"]


class MedianPruner(_Strict):
    name: Literal["median"] = "median"
    n_startup_trials: Annotated[int, Field(ge=0)] = 5
    n_warmup_steps: Annotated[int, Field(ge=0)] = 3


class HyperbandPruner(_Strict):
    name: Literal["hyperband"]
    min_resource: PositiveInt = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class SuccessiveHalvingPruner(_Strict):
    name: Literal["successive_halving"]
    min_resource: PositiveInt = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 4


class NoPruner(_Strict):
    name: Literal["none"]


Sampler = Annotated[Union[TPE, RandomSampler], Field(discriminator="name")]
Pruner = Annotated[
    Union[MedianPruner, HyperbandPruner, SuccessiveHalvingPruner, NoPruner],
    Field(discriminator="name"),
]


class Storage(_Strict):
    heartbeat_interval: PositiveInt = 30
    grace_period: PositiveInt = 90
    max_retry: Annotated[int, Field(ge=0)] = 2
    artifacts: str = "storage/artifacts"


class StudyConfig(_Strict):
    """Everything that defines a study; ``fingerprint()`` is what must not change on resume."""

    study_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also a folder name
    seed: int = 0
    search_space: SearchSpace = SearchSpace()
    data: Data = Data()
    training: Training = Training()
    sampler: Sampler = TPE()
    pruner: Pruner = MedianPruner()
    storage: Storage = Storage()

    def fingerprint(self) -> dict[str, Any]:
        """The parts that give a trial's value its meaning; a resumed study must match them."""
        return self.model_dump(mode="json", include={"search_space", "data", "training"})


_TAGS = {"tpe", "random", "median", "hyperband", "successive_halving", "none"}


def parse_config(raw: Any, source: str) -> StudyConfig:
    """Validate a mapping, raising ``UsageError`` with one line naming source, key and problem."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"] if p not in _TAGS) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown name {error['ctx']['tag']!r} (choose {error['ctx']['expected_tags']})"
        raise UsageError(f"{source}: {key}: {message}") from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study config file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_config(raw, str(path))
