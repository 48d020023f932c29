"""What a search shows while it runs: a bar in a terminal, plain lines in a log file."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios

import optuna
import pytest

from search.running.progress import Monitor

EPOCHS = 3


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def study(sqlite_url: str) -> optuna.Study:
    """Trials 0-1 finished before this command (first=2; the best, 0.9, is theirs and not shown);
    2 complete, 3 pruned, 4 running, 5 running."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="shown", storage=sqlite_url, direction="maximize")
    for curve, state in [([0.5, 0.9], "complete"), ([0.2], "pruned"), ([0.6, 0.7], "complete"),
                         ([0.3, 0.1], "pruned"), ([0.55], "running"), ([], "running")]:
        trial = study.ask({"dropout": optuna.distributions.FloatDistribution(0.0, 0.7)})
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
        if state == "complete":
            study.tell(trial, max(curve))
        elif state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return study


def finished_lines(text: str) -> list[str]:
    return [line.strip("\r") for line in text.splitlines() if " COMPLETE " in line or " PRUNED " in line]


def test_a_terminal_gets_a_bar_with_the_best_trial_and_the_running_epochs(study: optuna.Study) -> None:
    out = Terminal()
    monitor = Monitor(study, first=2, total=6, epochs=EPOCHS, file=out)
    monitor.poll()
    monitor.poll()
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    lines = finished_lines(text)
    assert [line.split()[:3] for line in lines] == [["trial", "2", "COMPLETE"], ["trial", "3", "PRUNED"]]
    bar = text.rsplit("\r", 1)[-1]
    assert "2/6" in bar
    # the best of the whole study (trial 0, before this command), then this command's running trials
    assert "best by search 0.7000 (trial 2, unconfirmed); trial 4 epoch 2/3 val 0.5500; trial 5 epoch 1/3" in bar
    monitor.bar.close()


def test_a_log_file_gets_lines_and_a_status_line_but_no_redraws(study: optuna.Study) -> None:
    out, now = io.StringIO(), [1000.0]
    monitor = Monitor(study, first=2, total=6, epochs=EPOCHS, status_every=300.0, file=out,
                      clock=lambda: now[0])
    now[0] += 299.0
    monitor.poll()  # no status line before 5 minutes
    now[0] += 1.0
    monitor.poll()  # 5 minutes: one
    now[0] += 60.0
    monitor.poll()  # the next is 5 minutes away
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert len(finished_lines(text)) == 2  # each finished trial once
    (status,) = [line for line in text.splitlines() if "trials finished" in line]
    assert "2/6 trials finished in 5.0 min, about 10 min left" in status
    assert status.endswith("best by search 0.7000 (trial 2, unconfirmed); trial 4 epoch 2/3 val 0.5500; trial 5 epoch 1/3")


def test_the_thread_polls_and_the_exit_reports_the_last_trials(study: optuna.Study) -> None:
    out = io.StringIO()
    with Monitor(study, first=2, total=4, epochs=EPOCHS, interval=0.01, file=out):
        trial = study.ask({"dropout": optuna.distributions.FloatDistribution(0.0, 0.7)})
        trial.report(0.95, 1)
        study.tell(trial, 0.95)
    assert [line.split()[1] for line in finished_lines(out.getvalue())] == ["2", "3", "6"]


def test_a_real_terminal_gets_the_bar(study: optuna.Study) -> None:
    master, replica = os.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns
    with os.fdopen(replica, "w") as terminal:
        monitor = Monitor(study, first=2, total=6, epochs=EPOCHS, file=terminal)
        monitor.poll()
        monitor.bar.close()
    chunks = []
    try:  # the replica is closed: read until Linux says EIO (all read), waiting at most 10 s a read
        while select.select([master], [], [], 10)[0] and (chunk := os.read(master, 65536)):
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        os.close(master)
    text = b"".join(chunks).decode()
    assert "\r" in text and "best by search 0.7000 (trial 2, unconfirmed)" in text and "2/6" in text
