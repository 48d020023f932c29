"""Every number has a bound that keeps the program working: each whole number in a config and
each numeric flag of each command, refused above it in one line with exit code 2."""

from __future__ import annotations

import argparse
import typing

import pytest
from pydantic import BaseModel

from search.base.config import StudyConfig, parse_config
from search.base.errors import UsageError
from search.interfaces.cli import build_parser, main
from search.running.workers import Budget

HUGE = [10**30, 2**64, 2**63, 100_000_000_000_000]


def _models(annotation: object) -> list[type[BaseModel]]:
    """The config sections an annotation can hold: a model, or each of a union's."""
    found = [a for a in typing.get_args(annotation) for a in _models(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    return found


def whole_numbers(model: type[BaseModel] = StudyConfig, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """(path to the field, the section's tag if any) for every ``int`` field of the config."""
    found = []
    for name, field in model.model_fields.items():
        if field.annotation is int:
            found.append((path + (name,), {}))
        for section in _models(field.annotation):
            tag = section.model_fields.get("name")
            extra = {"name": typing.get_args(tag.annotation)[0]} if tag else {}
            found += [(p, {**extra, **e} if len(p) == len(path) + 2 else e)
                      for p, e in whole_numbers(section, path + (name,))]
    return found


FIELDS = whole_numbers()


def test_the_walk_finds_every_section():
    sections = {path[0] for path, _ in FIELDS}
    assert sections >= {"seed", "data", "training", "sampler", "pruner", "storage"}
    assert ("storage", "heartbeat_interval") in [p for p, _ in FIELDS]
    assert len(FIELDS) >= 15


@pytest.mark.parametrize("path, tag", FIELDS, ids=[".".join(p) + f"[{t.get('name', '')}]" for p, t in FIELDS])
@pytest.mark.parametrize("value", HUGE[:2])
def test_every_whole_number_in_a_config_has_a_bound(path, tag, value):
    raw: dict = {"study_name": "bounds"}
    section = raw
    for key in path[:-1]:
        section = section.setdefault(key, dict(tag))
    section[path[-1]] = value
    with pytest.raises(UsageError) as info:
        parse_config(raw, "f.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"f.yaml: {'.'.join(path)}: "), message


def numeric_flags() -> list[tuple[str, str]]:
    """(command, flag) for every option of every command that takes a number."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command, parser in commands.choices.items():
        for action in parser._actions:
            if action.option_strings and callable(action.type):
                try:
                    number = isinstance(action.type("1"), (int, float))
                except argparse.ArgumentTypeError:
                    number = False
                if number:
                    found.append((command, action.option_strings[-1]))
    return found


FLAGS = numeric_flags()


def test_the_numeric_flags_are_all_found():
    assert {("search", "--trials"), ("search", "--timeout"), ("worker", "--launch-seed"),
            ("dashboard", "--port"), ("confirm", "--seeds"), ("retrain", "--seeds"),
            ("report", "--top")} <= set(FLAGS)


@pytest.mark.parametrize("command, flag", FLAGS)
@pytest.mark.parametrize("value", HUGE)
def test_every_numeric_flag_has_a_bound(command, flag, value, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main([command, flag, str(value), "--storage", f"sqlite:///{tmp_path / 'no.db'}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and f"argument {flag}: must be at most" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("trials", [2**63, 2**64, -1])
def test_the_shared_trial_counter_never_wraps(trials):
    with pytest.raises(ValueError, match="trials must be from 0"):
        Budget(trials)
