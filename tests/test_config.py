import os
from pathlib import Path

import pytest

from search.base.config import (
    Param,
    SearchSpace,
    SuccessiveHalvingPruner,
    load_config,
    parse_config,
)
from search.base.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


def test_shipped_configs_say_what_docs_configs_says():
    configs = {p.name: load_config(p) for p in (REPO / "study_configs").glob("*.yaml")}
    assert {name: c.study_name for name, c in configs.items()} == {
        "cifar10.yaml": "cifar10-regularization", "smoke.yaml": "cifar10-smoke", "tutorial.yaml": "cifar10-tutorial"}
    full, smoke, tutorial = configs["cifar10.yaml"], configs["smoke.yaml"], configs["tutorial.yaml"]
    assert (full.data.train_size, full.data.val_size, full.training.epochs) == (45_000, 5_000, 20)
    assert full.pruner == SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)
    assert (smoke.data.train_size, smoke.data.val_size, smoke.training.epochs) == (4_000, 1_000, 3)
    assert smoke.search_space == full.search_space  # the same space, on a subset
    fixed = {name: param.value for name, param in tutorial.search_space}
    assert fixed == {"l1": 0.0, "l2": 0.001, "dropout": 0.5}


def test_defaults_follow_the_tutorial():
    config = parse_config({"study_name": "s"}, "s.yaml")
    assert (config.training.epochs, config.training.batch_size) == (20, 32)
    assert (config.data.train_size, config.data.val_size) == (45_000, 5_000)
    space = config.search_space
    assert (space.l1.low, space.l1.high, space.l1.log, space.l1.off_below) == (1e-7, 1e-2, True, 1e-6)
    assert (space.dropout.low, space.dropout.high, space.dropout.log) == (0.0, 0.7, False)
    assert (config.sampler.name, config.pruner) == ("tpe", SuccessiveHalvingPruner(min_resource=1, reduction_factor=4))
    assert config.baseline.model_dump() == {"l1": 0.0, "l2": 0.001, "dropout": 0.5}


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
        ({"study_name": "../up"}, "f.yaml: study_name: '../up': use up to 100 letters, digits"),
        ({"study_name": "a" * 101}, "f.yaml: study_name: 'aaaaaaaaaa"),
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


# Raw YAML, as a user writes it: each case is refused in one line naming file, key and problem.
STUDY = "study_name: s\n"
LOG_RANGE = "{low: 1.0e-6, high: 1.0e-2, log: true}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("seed: 1\nseed: 2\n", "not valid YAML (duplicate key 'seed' on line 3)"),
        ("search_space:\n  l1: {value: 0.0}\n  l1: {value: 0.1}\n", "duplicate key 'l1' on line 4"),
        ("training: {epochs: 2, epochs: 3}\n", "duplicate key 'epochs' on line 2"),
        ("search_space: {l1: {low: .nan, high: 1.0}}\n", "search_space.l1.low: Input should be a finite number"),
        ("search_space: {l2: {low: 0.0, high: .inf}}\n", "search_space.l2.high: Input should be a finite number"),
        ("search_space: {dropout: {value: .nan}}\n", "search_space.dropout.value: Input should be a finite"),
        ("search_space: {l1: {low: -.inf, high: 0.1}}\n", "search_space.l1.low: Input should be a finite"),
        ("training: {learning_rate: .inf}\n", "training.learning_rate: Input should be a finite number"),
        ("training: {learning_rate: .NaN}\n", "training.learning_rate: Input should be a finite number"),
        ("training: {epochs: .inf}\n", "training.epochs: Input should be a finite number"),
        ("baseline: {l1: 0.0, l2: .nan, dropout: 0.5}\n", "baseline.l2: Input should be a finite number"),
        ("search_space: {l1: {low: 1.0e-7, high: 1.0e-2, log: true, off_below: .inf}}\n",
         "search_space.l1.off_below: Input should be a finite number"),
        ("seed: -1\n", "seed: Input should be greater than or equal to 0"),
        ("data: {split_seed: -7}\n", "data.split_seed: Input should be greater than or equal to 0"),
        ("seed: 4294967296\n", "seed: Input should be less than or equal to 4294967295"),
        ("data: {train_size: 40, val_size: 20}\ntraining: {batch_size: 64}\n",
         "training.batch_size (64) is larger than data.train_size (40)"),
        ("data: {train_size: 9, val_size: 100}\ntraining: {batch_size: 1}\n",
         "data: train_size (9) must be at least 10, one image per class"),
        ("data: {train_size: 400, val_size: 5}\n", "data: val_size (5) must be at least 10"),
        ("storage: {heartbeat_interval: 30, grace_period: 1}\n",
         "storage: grace_period (1 s) must be at least 2 x heartbeat_interval (30 s)"),
        ("storage: {heartbeat_interval: 10, grace_period: 19}\n", "storage: grace_period (19 s) must be"),
        ("x: [unclosed\n", "not valid YAML (expected ',' or ']', but got '<stream end>' on line 3)"),
        ("x: !!python/object/apply:os.system [echo hi]\n", "not valid YAML (could not determine a constructor"),
        ("x: " + "[" * 3000 + "]" * 3000 + "\n", "not valid YAML (nested too deeply)"),
        # off_below and the baseline
        ("search_space: {dropout: {low: 0.0, high: 0.5, off_below: 0.1}}\n",
         "search_space.dropout: off_below needs a log scale (log: true)"),
        ("search_space: {l1: {low: 1.0e-6, high: 1.0e-2, log: true, off_below: 1.0e-6}}\n",
         "search_space.l1: off_below (1e-06) must lie in (1e-06, 0.01]"),
        ("search_space: {l1: {low: 1.0e-6, high: 1.0e-2, log: true, off_below: 0.1}}\n",
         "search_space.l1: off_below (0.1) must lie in (1e-06, 0.01]"),
        ("search_space: {l1: {value: 0.0, off_below: 1.0e-6}}\n", "search_space.l1: give either value or low/high"),
        (f"search_space: {{l1: {LOG_RANGE}}}\n",
         "baseline.l1: 0.0 is outside the search space [1e-06, 0.01]; add off_below so that 0 means off, "
         "or use baseline: null"),
        ("baseline: {l1: 5.0e-7, l2: 0.001, dropout: 0.5}\n",
         "baseline.l1: 5e-07 is outside the search space [1e-06, 0.01]; give 0 for off"),
        ("baseline: {l1: 0.0, l2: 0.001, dropout: 0.8}\n",
         "baseline.dropout: 0.8 is outside the search space [0.0, 0.7], or use baseline: null"),
        ("search_space: {l2: {value: 0.01}}\n", "baseline.l2: 0.001 is not the fixed value 0.01"),
        ("baseline: {l1: -1.0, l2: 0.001, dropout: 0.5}\n", "baseline.l1: a penalty cannot be negative (-1.0)"),
        ("baseline: {l1: 0.0, l2: 0.001, dropout: 1.0}\n", "baseline.dropout: dropout must lie in [0, 1), got 1.0"),
        ("baseline: {l1: 0.0, l2: 0.001}\n", "baseline.dropout: Field required"),
        ("baseline: {l1: 0.0, l2: 0.001, dropout: 0.5, lr: 0.1}\n", "baseline.lr: unknown key"),
    ],
)
def test_bad_yaml_is_refused_in_one_line(text, expected, tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(STUDY + text)
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert "\n" not in message


def test_a_merge_key_is_not_a_duplicate(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(STUDY + "training: &t {epochs: 3, batch_size: 16}\nsampler:\n  <<: {name: random}\n")
    assert load_config(path).sampler.name == "random"


def test_paths_that_are_not_config_files(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (tmp_path / "nul.yaml").write_bytes(b"study_name: s\x00\n")
    (tmp_path / "empty.yaml").write_text("")
    cases = {
        tmp_path / "folder.yaml": "a folder, not a file",
        tmp_path / "binary.yaml": "not a text file (not UTF-8)",
        tmp_path / "nul.yaml": "not a text file (binary)",
        tmp_path / "empty.yaml": "expected a mapping of settings, got nothing",
        Path(os.devnull): "not a regular file",
    }
    for path, expected in cases.items():
        with pytest.raises(UsageError) as info:
            load_config(path)
        assert str(info.value) == f"{path}: {expected}"


def test_an_unreadable_config_is_refused_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "secret.yaml"
    path.write_text(STUDY)

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)  # root reads a mode-000 file anyway
    with pytest.raises(UsageError, match=r"secret.yaml: cannot read \(Permission denied\)$"):
        load_config(path)


# off_below: the lowest part of a log range means "off"
SPACE = SearchSpace(
    l1=Param(low=1e-7, high=1e-2, log=True, off_below=1e-6),
    l2=Param(low=1e-5, high=1e-1, log=True),
    dropout=Param(value=0.25),
)


def test_effective_turns_values_below_off_below_into_zero():
    assert SPACE.effective({"l1": 5e-7, "l2": 2e-5, "dropout": 0.25}) == {"l1": 0.0, "l2": 2e-5, "dropout": 0.25}
    assert SPACE.effective({"l1": 1e-6, "l2": 1e-5, "dropout": 0.25})["l1"] == 1e-6  # off_below itself is on
    assert SPACE.effective({"l1": 3e-3, "l2": 1e-5, "dropout": 0.25})["l1"] == 3e-3


def test_trial_params_map_a_point_into_the_space():
    assert SPACE.trial_params({"l1": 0.0, "l2": 3e-3, "dropout": 0.25}) == {"l1": 1e-7, "l2": 3e-3, "dropout": 0.25}
    assert SPACE.trial_params({"l1": 2e-4, "l2": 1e-5, "dropout": 0.25})["l1"] == 2e-4
    point = {"l1": 0.0, "l2": 3e-3, "dropout": 0.25}
    assert SPACE.effective(SPACE.trial_params(point)) == point  # the enqueued trial is that point


@pytest.mark.parametrize(
    "point, message",
    [
        ({"l1": 0.0, "l2": 0.0, "dropout": 0.25}, "l2: 0.0 is outside the search space [1e-05, 0.1]; add off_below"),
        ({"l1": 5e-7, "l2": 1e-3, "dropout": 0.25}, "l1: 5e-07 is outside the search space [1e-06, 0.01]; give 0"),
        ({"l1": 0.0, "l2": 1e-3, "dropout": 0.3}, "dropout: 0.3 is not the fixed value 0.25"),
    ],
)
def test_trial_params_refuse_a_point_outside_the_space(point, message):
    with pytest.raises(ValueError) as info:
        SPACE.trial_params(point)
    assert str(info.value).startswith(message)


def test_a_baseline_can_be_turned_off_and_is_recorded_but_not_fingerprinted():
    space = {"l1": {"low": 1e-6, "high": 1e-2, "log": True}}
    off = parse_config({"study_name": "s", "search_space": space, "baseline": None}, "s.yaml")
    assert off.baseline is None and off.model_dump()["baseline"] is None
    moved = parse_config({"study_name": "s", "baseline": {"l1": 1e-4, "l2": 0.0, "dropout": 0.1}}, "s.yaml")
    assert moved.model_dump()["baseline"] == {"l1": 1e-4, "l2": 0.0, "dropout": 0.1}
    assert "baseline" not in moved.fingerprint()
    assert moved.fingerprint() == parse_config({"study_name": "s"}, "s.yaml").fingerprint()


def test_a_fixed_zero_accepts_a_baseline_of_zero():
    config = load_config(REPO / "study_configs" / "tutorial.yaml")
    assert config.search_space.trial_params(config.baseline.model_dump()) == {"l1": 0.0, "l2": 0.001, "dropout": 0.5}


def test_shipped_searches_start_from_the_tutorial_baseline():
    for name in ("cifar10.yaml", "smoke.yaml"):
        config = load_config(REPO / "study_configs" / name)
        enqueued = config.search_space.trial_params(config.baseline.model_dump())
        assert config.search_space.effective(enqueued) == {"l1": 0.0, "l2": 0.001, "dropout": 0.5}
        assert config.search_space.l1.off_below == config.search_space.l2.off_below == 1e-6
