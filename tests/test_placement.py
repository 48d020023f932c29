"""Where workers run (GPUs found without TensorFlow, or a share of the cores each) and what the
summary says of a worker that was killed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from search.running.runner import summary
from search.running.workers import WorkerSpec, place_workers, visible_gpus
from search.tuning.storage import open_storage
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
