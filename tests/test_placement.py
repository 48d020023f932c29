"""Where workers run (GPUs found without TensorFlow, or a share of the cores each), what the
summary says of a worker that was killed, and which exit code wins, for one worker as for many."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from search.base.errors import StorageUnavailable
from search.running.layout import Plan
from search.running.runner import SearchRequest, exit_code, run_search, summary
from search.running.workers import WorkerSpec, place_workers, visible_gpus
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study

SMI = "GPU 0: NVIDIA H100 (UUID: GPU-aaa)\nGPU 1: NVIDIA H100 (UUID: GPU-bbb)\nGPU 2: NVIDIA H100 (UUID: GPU-ccc)\n"


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``nvidia-smi`` first on PATH that lists three GPUs; no CUDA_VISIBLE_DEVICES."""
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] && printf '{SMI}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tool


def test_nvidia_smi_lists_the_gpus(nvidia_smi):
    assert visible_gpus() == ["0", "1", "2"]


@pytest.mark.parametrize("value, gpus", [
    ("2,0", ["2", "0"]),
    (" 1 , 3 ", ["1", "3"]),
    ("GPU-aaa,MIG-bbb", ["GPU-aaa", "MIG-bbb"]),
    ("", []),
    ("-1", []),  # the usual way to hide every GPU
    ("0,-1,1", ["0"]),  # CUDA stops at the first entry that names no device
])
def test_cuda_visible_devices_wins_over_nvidia_smi(value, gpus, nvidia_smi, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpus() == gpus


def test_without_nvidia_smi_nor_the_variable_there_is_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == []


def test_workers_take_the_gpus_round_robin(tiny_config):
    base = WorkerSpec(tiny_config, None, "tiny", None)
    placed = place_workers(base, 5, ["2", "0"], cores=16)
    assert [(s.index, s.gpu, s.threads) for s in placed] == [
        (0, "2", None), (1, "0", None), (2, "2", None), (3, "0", None), (4, "2", None)]
    assert placed[1].device == "GPU 0"


def test_without_gpus_workers_share_the_cores(tiny_config):
    base = WorkerSpec(tiny_config, None, "tiny", None)
    assert [(s.gpu, s.threads) for s in place_workers(base, 3, [], cores=16)] == [(None, 5)] * 3
    assert [(s.gpu, s.threads) for s in place_workers(base, 4, [], cores=2)] == [(None, 1)] * 4
    (alone,) = place_workers(base, 1, [], cores=16)
    assert alone.threads is None and alone.device == "CPU, all cores"


def test_the_summary_names_each_killed_worker_and_its_signal(tiny_config, sqlite_url):
    storage = open_storage(sqlite_url, tiny_config.storage)
    study, _ = prepare_study(tiny_config, storage)
    spec = WorkerSpec(tiny_config, sqlite_url, study.study_name, None)
    text = summary(study, spec, 0, storage, 90.0, codes=[0, 137, 130, 143])
    killed = [line for line in text.splitlines() if "was killed by" in line]
    assert killed == [
        "worker 1 was killed by SIGKILL: its trial stays RUNNING until its heartbeat is stale, "
        "then a worker fails and retries it",
        "worker 3 was killed by SIGTERM: its trial stays RUNNING until its heartbeat is stale, "
        "then a worker fails and retries it",
    ]
    assert "was killed" not in summary(study, spec, 0, storage, 90.0, codes=[0, 130, 2, 3])


@pytest.mark.parametrize("codes, stopped, code", [
    ([], False, 0),
    ([0, 0], False, 0),
    ([0, 0], True, 130),  # the workers stopped before their first trial
    ([4, 3, 137, 130], False, 130),  # a worker stopped by a signal: the others follow from it
    ([137, 3], True, 130),  # a second signal killed a worker
    ([4, 137, 3], False, 3),  # the storage failed: every worker stops
    ([4, 1, 2, 143], False, 143),  # a worker killed from outside (not by this command)
    ([1, 4, 2], False, 2),  # bad input explains failing trials
    ([0, 1, 4], False, 4),
    ([0, 1], False, 1),
])
def test_exit_code_precedence_is_not_numeric_order(codes, stopped, code):
    assert exit_code(codes, stopped) == code


def no_trials(monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """``run_search`` plans ``workers`` workers, which run no trial: what they do is faked."""
    from search.running import runner

    monkeypatch.setattr(runner, "plan_workers", lambda *args: Plan(workers, 1, "faked"))


@pytest.mark.parametrize("stopped_by, code", [(None, 3), ("SIGTERM", 130)])
def test_many_workers_exit_with_the_code_that_wins(stopped_by, code, monkeypatch, tiny_config, sqlite_url,
                                                   cifar_dir, capsys):
    from search.running import runner

    def fake(spec, workers, budget, stop):
        stop.signal = stopped_by
        return [143, 4, 3, 0]

    no_trials(monkeypatch, 4)
    monkeypatch.setattr(runner, "run_workers", fake)
    request = SearchRequest(tiny_config, 4, StorageOpener(sqlite_url), workers=4, data_dir=str(cifar_dir))
    assert run_search(request) == code
    out = capsys.readouterr().out
    assert "worker 0 was killed by SIGTERM" in out
    assert ("stopped by SIGTERM: no new trials were started" in out) == (stopped_by is not None)


def test_one_worker_follows_the_same_precedence(monkeypatch, tiny_config, sqlite_url, cifar_dir, capsys):
    from search.running import runner

    def failing(stopped_by: str | None):
        def run_worker(spec, budget, split, storage, stop):
            stop.signal = stopped_by
            raise StorageUnavailable("STORAGE x: disk full, stopping")
        return run_worker

    no_trials(monkeypatch, 1)
    monkeypatch.setattr(runner, "run_worker", failing(None))
    request = SearchRequest(tiny_config, 1, StorageOpener(sqlite_url), workers=1, data_dir=str(cifar_dir))
    with pytest.raises(StorageUnavailable):  # its code wins: the command tells it, as the last line
        run_search(request)
    capsys.readouterr()
    monkeypatch.setattr(runner, "run_worker", failing("SIGINT"))
    assert run_search(request) == 130  # a stop wins
    out, err = capsys.readouterr()
    assert "stopped by SIGINT: no new trials were started" in out
    assert err.splitlines()[-1] == "error: STORAGE x: disk full, stopping"
