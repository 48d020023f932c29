"""Ctrl-C and SIGTERM at any moment of every command (start-up, study creation, a trial, writing
an export, confirm, retrain, report): one line saying so, exit code 130, no traceback, no trial
left RUNNING. Each signal is sent once the command handles signals, after a chosen delay; the
invariant holds wherever it lands, whatever the machine's speed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.base.config import parse_config
from search.results.export import export
from search.testing import REPO, tiny_raw
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study

DELAYS = [0.0, 0.4, 1.5, 4.0]  # seconds after the command handles signals


def handles_signals(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler (``SigCgt`` in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def stop_at(args: list[str], delay: float, signum: int, cwd: Path) -> subprocess.CompletedProcess:
    process = subprocess.Popen([sys.executable, "-m", "search", *args], cwd=cwd, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not handles_signals(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=300)
    return subprocess.CompletedProcess(args, process.returncode, output)


@pytest.fixture
def setting(tmp_path, cifar_dir, sqlite_url):
    """A tiny study with a complete baseline and its export; a config for a long search."""
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, training={"epochs": 200, "batch_size": 50})
    (tmp_path / "long.yaml").write_text(yaml.safe_dump({**raw, "study_name": "long"}))
    config = parse_config(raw, "tiny")
    study, _ = prepare_study(config, open_storage(sqlite_url, config.storage))
    trial = study.ask({name: FloatDistribution(*p.bounds, log=p.log) for name, p in config.search_space})
    for key, value in {"best_epoch": 2, "epochs_run": 2, "seed": 7,
                       "effective_params": config.search_space.effective(trial.params)}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.6)
    (best, *_) = export(StorageOpener(sqlite_url), "tiny", root=tmp_path / "exports")
    data = ["--data-dir", str(cifar_dir)]
    return {
        "search": ["search", "--config", str(tmp_path / "long.yaml"), "--storage", sqlite_url,
                   "--trials", "2", "--workers", "1", *data],
        "export": ["export", "--storage", sqlite_url, "--study", "tiny"],
        "report": ["report", "--storage", sqlite_url, "--study", "tiny"],
        "confirm": ["confirm", "--storage", sqlite_url, "--study", "tiny", "--top", "1", "--seeds", "1",
                    "--workers", "1", *data],
        "retrain": ["retrain", "--config", str(best), "--no-baseline", *data],
    }


@pytest.mark.parametrize("command", ["search", "export", "report", "confirm", "retrain"])
def test_a_stop_at_any_moment_is_one_line_and_exit_130(command, setting, sqlite_url, tmp_path):
    stopped = 0
    for i, delay in enumerate(DELAYS):
        signum = (signal.SIGINT, signal.SIGTERM)[i % 2]
        done = stop_at(setting[command], delay, signum, tmp_path)
        told = [line for line in done.stdout.splitlines() if line.startswith("stopped by")]
        # a trial it ended says so on its own line (fail_reason), without Optuna's warnings
        assert "Traceback" not in done.stdout and "Interrupted(" not in done.stdout, (delay, done.stdout)
        if done.returncode == 0 and not told:  # it ended before the signal came
            continue
        stopped += 1
        name = signal.Signals(signum).name
        assert done.returncode == 130 and len(told) == 1 and told[0].startswith(f"stopped by {name}"), (
            delay, done.stdout)
        for study in optuna.get_all_study_summaries(sqlite_url):
            trials = optuna.load_study(study_name=study.study_name, storage=sqlite_url).trials
            assert not [t for t in trials if t.state == TrialState.RUNNING], (delay, study.study_name)
    assert stopped >= 1  # the first signal comes while it starts: it stops it
