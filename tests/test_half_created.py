"""A study whose creator stopped between creating it and recording its definition (killed, or
its storage failed): the next command says exactly what to do, and doing it works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from search.base.config import parse_config
from search.interfaces.cli import main
from search.testing import tiny_raw
from search.tuning import study as study_module

STEPS = ["create_study", "set_metric_names", "config", "baseline"]


@pytest.mark.parametrize("stopped_after", STEPS)
def test_a_creation_stopped_half_way_says_exactly_what_to_do(stopped_after, monkeypatch, tmp_path, cifar_dir,
                                                             sqlite_url, capsys):
    monkeypatch.setattr(study_module, "DEFINITION_WAIT_SECONDS", 0.1)
    raw = tiny_raw(tmp_path, training={"epochs": 1, "batch_size": 50})
    config = parse_config(raw, "tiny")
    half = optuna.create_study(study_name="tiny", storage=sqlite_url, direction="maximize")
    done = STEPS.index(stopped_after)  # the steps of _record_definition done before it stopped
    if done >= 1:
        half.set_metric_names(["val_accuracy"])
    if done >= 2:
        half.set_user_attr("config", config.model_dump(mode="json"))
    if done >= 3:
        half.enqueue_trial(config.search_space.trial_params(config.baseline.model_dump()),
                           user_attrs={"baseline": True})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    common = ["--storage", sqlite_url, "--data-dir", str(cifar_dir), "--trials", "1"]
    for args in (["search", "--config", str(path)], ["worker", "--study", "tiny"]):
        assert main([*args, *common]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        told = line.split("`")[1]
        assert told == f"optuna delete-study --storage '{sqlite_url}' --study-name 'tiny'", line
    path_env = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the venv's optuna
    deleted = subprocess.run(["sh", "-c", told], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PATH": path_env})
    assert deleted.returncode == 0, deleted.stderr
    assert main(["search", "--config", str(path), *common]) == 0  # and run again
    assert optuna.load_study(study_name="tiny", storage=sqlite_url).user_attrs["fingerprint"]
