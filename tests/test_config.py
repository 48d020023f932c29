from pathlib import Path

import pytest

from search.config import load_config, parse_config
from search.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((REPO / "study_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    assert load_config(path).study_name


def test_defaults_follow_the_tutorial():
    config = parse_config({"study_name": "s"}, "s.yaml")
    assert (config.training.epochs, config.training.batch_size) == (20, 32)
    assert (config.data.train_size, config.data.val_size) == (45_000, 5_000)
    space = config.search_space
    assert (space.l1.low, space.l1.high, space.l1.log) == (1e-6, 1e-2, True)
    assert (space.dropout.low, space.dropout.high, space.dropout.log) == (0.0, 0.7, False)
    assert (config.sampler.name, config.pruner.name) == ("tpe", "median")


def test_a_parameter_can_be_fixed():
    config = parse_config({"study_name": "s", "search_space": {"l1": {"value": 0.0}}}, "s.yaml")
    assert config.search_space.l1.bounds == (0.0, 0.0)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"bogus": 1}, "f.yaml: bogus: unknown key"),
        ({"training": {"epoch": 3}}, "f.yaml: training.epoch: unknown key"),
        ({"training": {"batch_size": "big"}}, "f.yaml: training.batch_size: Input should be a valid integer"),
        ({"search_space": {"l2": {"low": 1e-2, "high": 1e-4}}}, "f.yaml: search_space.l2: low (0.01) is greater than high"),
        ({"search_space": {"l1": {"low": 0, "high": 1e-2, "log": True}}}, "f.yaml: search_space.l1: a log scale needs low > 0"),
        ({"search_space": {"dropout": {"low": 0.2, "high": 1.0}}}, "f.yaml: search_space.dropout: dropout must lie in [0, 1)"),
        ({"search_space": {"dropout": {"value": -0.1}}}, "f.yaml: search_space.dropout: dropout must lie in [0, 1)"),
        ({"training": {"epochs": 0}}, "f.yaml: training.epochs: Input should be greater than 0"),
        ({"training": {"batch_size": -32}}, "f.yaml: training.batch_size: Input should be greater than 0"),
        ({"sampler": {"name": "cmaes"}}, "f.yaml: sampler: unknown name 'cmaes'"),
        ({"pruner": {"name": "patient"}}, "f.yaml: pruner: unknown name 'patient'"),
        ({"data": {"train_size": 49_000, "val_size": 5_000}}, "f.yaml: data: train_size + val_size exceeds"),
        ({"study_name": "../up"}, "f.yaml: study_name: String should match pattern"),
    ],
)
def test_bad_configs_are_refused_in_one_line(raw, expected):
    with pytest.raises(UsageError) as info:
        parse_config({"study_name": "s", **raw}, "f.yaml")
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study_name: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- list\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        load_config(bad)
