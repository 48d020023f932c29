"""Ctrl-C and SIGTERM through the real CLI: the running trial ends FAIL with its reason; a second
signal exits at once (the heartbeat rule then fails and retries what was running).

Each trial here trains for many epochs, so the signal lands inside ``fit`` whatever the machine's
speed: the test waits until the trial is running before it sends anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.base.errors import Stopped, stop_on_signals, stopped, stops_told_once
from search.testing import REPO, start_search, tiny_raw, wait_for_running


def launch(tmp_path: Path, cifar_dir: Path, url: str, workers: int) -> subprocess.Popen:
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None,
                   training={"epochs": 500, "batch_size": 50})
    return start_search(raw, tmp_path, url, 4, workers, cifar_dir, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def running(url: str, process: subprocess.Popen) -> optuna.trial.FrozenTrial:
    trial = wait_for_running(url, "tiny", process)
    if trial is None:
        pytest.fail(f"the search ended before a trial ran:\n{process.stdout.read()}")
    return trial


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)


@pytest.mark.parametrize("signum, workers", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)])
def test_a_stop_signal_fails_the_running_trial_with_its_reason(signum, workers, tmp_path, cifar_dir, sqlite_url):
    process = launch(tmp_path, cifar_dir, sqlite_url, workers)
    running(sqlite_url, process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    name = signal.Signals(signum).name
    told = [line for line in output.splitlines() if line.startswith("stopped by")]
    assert told == [f"stopped by {name}: no new trials were started"] and "Traceback" not in output, output
    assert "Interrupted(" not in output, output  # the trial's own line says why, not Optuna's warnings
    done = trials(sqlite_url)
    assert done and not [t for t in done if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert {t.state for t in done} == {TrialState.FAIL}
    assert {t.user_attrs["fail_reason"] for t in done} == {f"stopped by {name}"}
    assert all(t.user_attrs["epochs_run"] < 500 for t in done)


def test_a_second_signal_exits_at_once():
    code = ("import os, signal, time\n"
            "from search.running.workers import clean_stop\n"
            "with clean_stop() as stop:\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.2)\n"
            "    print('first:', stop.signal, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.2)\n"
            "    print('still running')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGINT
    assert done.stdout == "first: SIGINT\n"  # the first only asked to stop; the second ended it


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_to_the_process_group_as_the_workers_start_is_one_line(signum, tmp_path, cifar_dir, sqlite_url):
    """A terminal sends Ctrl-C to the whole process group, Slurm a SIGTERM: sent as the workers'
    server starts, the command stops in one line, exit 130, without a traceback (the server
    ignores Ctrl-C from its first instruction; one that SIGTERM ended is a stop, not an error)."""
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None,
                   training={"epochs": 500, "batch_size": 50})
    process = start_search(raw, tmp_path, sqlite_url, 4, 2, cifar_dir, text=True, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not any("forkserver" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
                  for pid in children(process.pid)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert [line for line in output.splitlines() if line.startswith("stopped by")] == [
        f"stopped by {signal.Signals(signum).name}: no new trials were started"], output


def children(pid: int) -> list[int]:
    """The process's children, from /proc (none once it has ended)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_a_stop_where_python_cannot_raise_it_is_kept_and_never_a_traceback():
    """A Ctrl-C landing in a ``__del__`` (as garbage is collected): Python cannot raise it there
    and would print "Exception ignored ..." with a traceback; it is kept, to be told once."""

    class Collected:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGINT)  # the handler raises Stopped here, in __del__

    seen = []
    sys.unraisablehook, outer = seen.append, sys.unraisablehook
    try:
        stop_on_signals()
        with stops_told_once():
            Collected()  # dropped at once: __del__ runs
            assert sys.unraisablehook is not seen.append
        assert sys.unraisablehook == seen.append  # as it was
        assert seen == [] and isinstance(stopped(), Stopped) and str(stopped()) == "stopped by SIGINT"
        stop_on_signals()  # as a new command: else this one would be a second stop, exiting at once
        Collected()  # outside: Python reports it as usual
        assert [type(u.exc_value) for u in seen] == [Stopped]
    finally:
        sys.unraisablehook = outer
        stop_on_signals()  # no stop recorded for later tests (their handlers: conftest.py)
