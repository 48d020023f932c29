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
        ("training: {epochs: .inf}\n", "training.epochs: Input should be a valid integer, got float inf"),
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


# Strict values, the class: every field type given each wrong type a YAML file can hold.
WRONG_TYPES = {  # YAML text -> the type it reads as (core schema): none may become a number or a flag
    '"1"': "str", "'0.5'": "str", "yes": "str", "on": "str", "1:30": "str", "1_000": "str",
    "2001-12-14": "str", "true": "bool", "false": "bool", "1": "int", "0.5": "float",
    "[1]": "list", "{a: 1}": "dict", "null": "NoneType",
}
FIELDS = {  # one key of each kind: its place in a file, its name in the message, its right types
    "training.epochs": ("training: {epochs: %s}", {"int"}),
    "pruner.n_startup_trials": ("pruner: {name: median, n_startup_trials: %s}", {"int"}),
    "seed": ("seed: %s", {"int"}),
    "training.learning_rate": ("training: {learning_rate: %s}", {"int", "float"}),
    "baseline.l2": ("baseline: {l1: 0.0, l2: %s, dropout: 0.5}", {"int", "float"}),
    "search_space.dropout.low": ("search_space: {dropout: {low: %s, high: 0.5}}", {"int", "float", "NoneType"}),
    "training.regularize_conv": ("training: {regularize_conv: %s}", {"bool"}),
    "search_space.l2.log": ("search_space: {l2: {low: 1.0e-6, high: 1.0e-2, log: %s}}", {"bool"}),
    "storage.artifacts": ("storage: {artifacts: %s}", {"str"}),
}


@pytest.mark.parametrize(
    "key, wrong",
    [(key, text) for key, (_, right) in FIELDS.items() for text, kind in WRONG_TYPES.items()
     if kind not in right],
)
def test_a_value_of_the_wrong_type_is_refused_never_converted(key, wrong, tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(STUDY + FIELDS[key][0] % wrong + "\n")
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: Input should be a valid "), message
    assert f"got {WRONG_TYPES[wrong]} " in message and "\n" not in message


@pytest.mark.parametrize(
    "text, value",
    [  # YAML 1.2 core: what stays a number where a number is natural
        ("training: {learning_rate: 1}", 1.0),  # an integer is a float
        ("training: {learning_rate: 1e-3}", 0.001),  # no dot needed (YAML 1.1 made it text)
        ("training: {epochs: 010}", 10),  # decimal, not YAML 1.1's octal 8
        ("training: {epochs: 0x10}", 16),
        ("baseline: {l1: 0, l2: 0, dropout: 0}", 0.0),
    ],
)
def test_numbers_read_as_yaml_1_2_core(text, value, tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(STUDY + text + "\n")
    config = load_config(path)
    section, key = text.split(":")[0], text.split("{")[1].split(":")[0]
    assert getattr(getattr(config, section), key) == value


@pytest.mark.parametrize(
    "text, expected",
    [
        ("training: &t {epochs: 3}\nsampler:\n  <<: {name: random}\n", "merge keys (<<) are not supported"),
        ("training: {epochs: 3, <<: {epochs: 4}}\n", "merge keys (<<) are not supported"),
        ("training: {!!merge <<: {epochs: 4}}\n", "merge keys (<<) are not supported"),
        ("seed: !!timestamp 2001-12-14\n", "could not determine a constructor"),
        ("seed: !!binary aGk=\n", "could not determine a constructor"),
        ("training: !!set {epochs}\n", "could not determine a constructor"),
        ("seed: !!int abc\n", "a value that is no number"),
        ("seed: " + "9" * 5000 + "\n", "a value that is no number"),
        ("training: {regularize_conv: !!bool maybe}\n", "a value that is no boolean"),
        ("training: {[epochs]: 1}\n", "a key must be a name"),
        ("x: &a [1, 1]\ntraining: {epochs: *a}\n", "aliases (*name) are not supported"),
        ("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(  # billion laughs: 10**12 values
            f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 13)),
         "aliases (*name) are not supported"),
    ],
)
def test_yaml_beyond_the_core_schema_is_refused_in_one_line(text, expected, tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(STUDY + text)
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid YAML (") and expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ('"a\\0b"', "holds a NUL or another control character"),
        ('"a\\tb"', "holds a NUL or another control character"),
        ('"' + "a" * 5000 + '"', "too long (5,000 characters; at most 4,096)"),
        ('"' + "a/" * 1000 + "b" * 300 + '"', "longer than 255 bytes"),
        ('""', "empty"),
    ],
)
def test_a_path_that_no_file_system_takes_is_refused_in_one_line(value, expected, tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(STUDY + f"storage: {{artifacts: {value}}}\n")
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: storage.artifacts: ") and expected in message
    assert "\n" not in message and len(message) < 300


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


# off_below: the penalty may be off (l1_on), and is sampled from [off_below, high] when on
SPACE = SearchSpace(
    l1=Param(low=1e-7, high=1e-2, log=True, off_below=1e-6),
    l2=Param(low=1e-5, high=1e-1, log=True),
    dropout=Param(value=0.25),
)


def test_effective_reads_the_on_flag():
    assert SPACE.effective({"l1_on": False, "l2": 2e-5, "dropout": 0.25}) == {"l1": 0.0, "l2": 2e-5, "dropout": 0.25}
    assert SPACE.effective({"l1_on": True, "l1": 3e-6, "l2": 2e-5, "dropout": 0.25})["l1"] == 3e-6


def test_effective_reads_the_old_encoding_below_off_below_as_zero():
    assert SPACE.effective({"l1": 5e-7, "l2": 2e-5, "dropout": 0.25}) == {"l1": 0.0, "l2": 2e-5, "dropout": 0.25}
    assert SPACE.effective({"l1": 1e-6, "l2": 1e-5, "dropout": 0.25})["l1"] == 1e-6  # off_below itself is on
    assert SPACE.effective({"l1": 3e-3, "l2": 1e-5, "dropout": 0.25})["l1"] == 3e-3


def test_trial_params_map_a_point_into_the_space():
    assert SPACE.trial_params({"l1": 0.0, "l2": 3e-3, "dropout": 0.25}) == {"l1_on": False, "l2": 3e-3, "dropout": 0.25}
    assert SPACE.trial_params({"l1": 2e-4, "l2": 1e-5, "dropout": 0.25}) == {
        "l1_on": True, "l1": 2e-4, "l2": 1e-5, "dropout": 0.25}
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
