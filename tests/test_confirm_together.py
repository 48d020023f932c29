"""Two ``confirm`` commands at the same moment on one study share the queue of confirmation runs:
each run is trained once, and nothing is ever sampled in the companion study."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution

from search.base.config import parse_config
from search.base.names import companion_name
from search.testing import REPO, tiny_raw
from search.tuning.storage import open_storage
from search.tuning.study import prepare_study


def searched(url: str, tmp_path) -> None:
    """The tiny study with its baseline and one other trial complete, as a search leaves it."""
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, training={"epochs": 1, "batch_size": 50})
    config = parse_config(raw, "tiny")
    study, _ = prepare_study(config, open_storage(url, config.storage))
    space = {name: FloatDistribution(*p.bounds, log=p.log) for name, p in config.search_space}
    for value in (0.5, 0.6):
        trial = study.ask(space)
        for key, attr in {"best_epoch": 1, "epochs_run": 1, "seed": 7,
                          "effective_params": config.search_space.effective(trial.params)}.items():
            trial.set_user_attr(key, attr)
        study.tell(trial, value)


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_two_confirms_at_once_share_the_queue_and_never_sample(backend, request, tmp_path, cifar_dir):
    url = request.getfixturevalue(backend)
    searched(url, tmp_path)
    args = [sys.executable, "-m", "search", "confirm", "--storage", url, "--study", "tiny", "--top", "1",
            "--seeds", "2", "--workers", "1", "--data-dir", str(cifar_dir)]
    both = [subprocess.Popen(args, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert "Traceback" not in "".join(outputs)
    trials = optuna.load_study(study_name=companion_name("tiny"), storage=url).trials
    runs = [t for t in trials if "source_trial" in t.user_attrs]
    assert sorted((t.user_attrs["source_trial"], t.user_attrs["seed_index"]) for t in runs if t.value) == [
        (0, 0), (0, 1), (1, 0), (1, 1)]  # the baseline (trial 0) and trial 1, two seeds each, once
    others = [t for t in trials if t not in runs]  # a worker that found the queue empty under it
    assert all(not t.params and t.state == optuna.trial.TrialState.FAIL for t in others), others
    assert all(re.search("no queued trial was left|queued twice", t.user_attrs["fail_reason"]) for t in others)
