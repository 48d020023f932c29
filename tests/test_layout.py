"""Workers x threads: ``auto`` and explicit numbers, capped at the trials and at memory; the flag."""

from __future__ import annotations

import pytest

from search.base.config import Data
from search.interfaces.cli import build_parser
from search.running import layout
from search.running.layout import Plan, plan_workers, worker_bytes

GB = 10**9
WORKER = int(1.2 * GB)
PLENTY, TIGHT, TINY = 64 * GB, int(5.1 * GB), int(0.5 * GB)


@pytest.mark.parametrize(
    "cores, memory, trials, expected",
    [
        (1, PLENTY, 100, (1, 1)),
        (2, PLENTY, 100, (2, 1)),  # one single-thread worker per core
        (16, PLENTY, 100, (16, 1)),
        (16, TIGHT, 100, (4, 4)),  # fewer workers fit: more threads each
        (16, TINY, 100, (1, 16)),  # not even one fits: one runs anyway, with every core
        (2, TINY, 100, (1, 2)),
        (16, PLENTY, 3, (3, 5)),  # no more workers than trials
        (16, PLENTY, 1, (1, 16)),
        (2, PLENTY, 1, (1, 2)),
        (16, TIGHT, 3, (3, 5)),  # the trials bind before the memory
        (16, PLENTY, None, (16, 1)),  # no trial limit
    ],
)
def test_auto_on_a_cpu(cores, memory, trials, expected):
    plan = plan_workers(None, trials, cores, 0, memory, WORKER)
    assert (plan.workers, plan.threads) == expected
    assert plan.reason.startswith(f"auto on {cores} core")


@pytest.mark.parametrize(
    "memory, trials, expected",
    [(PLENTY, 100, 2), (PLENTY, 1, 1), (TIGHT, 100, 2), (TINY, 100, 1), (PLENTY, 3, 2)],
)
def test_auto_on_gpus_is_one_worker_per_gpu(memory, trials, expected):
    plan = plan_workers(None, trials, 16, 2, memory, WORKER)
    assert (plan.workers, plan.threads) == (expected, None)
    assert plan.reason.startswith("auto on 2 GPUs")
    assert str(plan).startswith(f"layout: {expected} worker")


def test_an_explicit_number_is_capped_by_memory_and_says_so():
    plan = plan_workers(100, 100, 16, 0, TIGHT, WORKER)
    assert plan == Plan(4, 4, "WORKERS=100 capped to 4: 4 workers of ~1.2 GB fit in 5.1 GB available")
    assert str(plan) == f"layout: 4 workers x 4 threads ({plan.reason})"


@pytest.mark.parametrize(
    "requested, trials, cores, gpus, memory, expected, says",
    [
        (100, 3, 2, 0, PLENTY, (3, 1), "WORKERS=100 capped to 3: no more workers than TRIALS=3"),
        (100, 3, 16, 2, PLENTY, (3, None), "WORKERS=100 capped to 3: no more workers than TRIALS=3"),
        (4, 1, 16, 0, PLENTY, (1, 16), "WORKERS=4 capped to 1: no more workers than TRIALS=1"),
        (4, 100, 16, 0, TINY, (1, 16), "WORKERS=4 capped to 1: even 1 worker of ~1.2 GB may not fit"),
        (1, 100, 16, 0, TINY, (1, 16), "WORKERS=1: even 1 worker of ~1.2 GB may not fit in 0.5 GB"),
        (3, 100, 16, 0, PLENTY, (3, 5), "WORKERS=3: 3 workers of ~1.2 GB fit in 64.0 GB available"),
        (3, 100, 2, 0, PLENTY, (3, 1), "WORKERS=3: 3 workers"),  # more than the cores, as asked
        (5, 100, 2, 2, PLENTY, (5, None), "WORKERS=5: 5 workers"),  # GPUs shared round robin
        (8, 100, 16, 0, None, (8, 2), "WORKERS=8; memory available unknown"),
    ],
)
def test_explicit_numbers(requested, trials, cores, gpus, memory, expected, says):
    plan = plan_workers(requested, trials, cores, gpus, memory, WORKER)
    assert (plan.workers, plan.threads) == expected
    assert plan.reason.startswith(says)


def test_the_worker_size_grows_with_the_split():
    small, full = worker_bytes(Data(train_size=1000, val_size=500)), worker_bytes(Data())
    assert 1.1 * GB < small < full < 1.6 * GB
    assert plan_workers(None, 100, 16, 0, 8 * GB, small).workers > plan_workers(None, 100, 16, 0, 8 * GB, full).workers


@pytest.mark.parametrize("command", ["search", "worker"])
@pytest.mark.parametrize("text, expected", [("auto", None), ("AUTO", None), ("3", 3), ("1", 1)])
def test_the_flag_takes_auto_or_a_number(command, text, expected):
    assert build_parser().parse_args([command, "--workers", text]).workers == expected


@pytest.mark.parametrize("command", ["search", "worker"])
def test_the_flag_defaults_to_auto(command):
    assert build_parser().parse_args([command]).workers is None


@pytest.mark.parametrize("text, says", [("0", "at least 1, got 0"), ("-1", "at least 1, got -1"),
                                        ("abc", "not an integer: 'abc'"), ("2.5", "not an integer")])
def test_the_flag_refuses_others_in_one_line(text, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["search", "--workers", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--workers" in err and says in err and "auto" in err


def fake_system(tmp_path, monkeypatch, cgroup: str, files: dict[str, str]) -> None:
    monkeypatch.setattr(layout, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(layout, "PROC_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(layout, "CGROUPS", tmp_path / "sys")
    (tmp_path / "meminfo").write_text("MemTotal:  33554432 kB\nMemAvailable:    16777216 kB\n")
    (tmp_path / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (tmp_path / "sys" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sys" / name).write_text(text)


@pytest.mark.parametrize(
    "cgroup, files, expected",
    [
        ("0::/\n", {}, 16 * 2**30),  # MemAvailable
        ("0::/job\n", {"job/memory.max": "max\n", "job/memory.current": "1000\n"}, 16 * 2**30),
        ("0::/job\n", {"job/memory.max": f"{4 * 2**30}\n", "job/memory.current": f"{2**30}\n",
                       "job/memory.stat": f"anon 5\ninactive_file {2**29}\n"}, 3 * 2**30 + 2**29),
        ("0::/\n", {"memory.max": f"{2 * 2**30}\n", "memory.current": "0\n"}, 2 * 2**30),  # own root
        ("12:cpu:/x\n4:memory:/job\n0::/\n",
         {"memory/job/memory.limit_in_bytes": f"{2 * 2**30}\n", "memory/job/memory.usage_in_bytes": "0\n"},
         2 * 2**30),  # v1
        ("4:memory:/job\n", {"memory/job/memory.limit_in_bytes": "9223372036854771712\n",
                             "memory/job/memory.usage_in_bytes": "5\n"}, 16 * 2**30),  # v1, no limit
        ("garbage\n0::/../../x\n", {}, 16 * 2**30),
    ],
)
def test_available_memory_is_the_least_of_meminfo_and_the_cgroup_room(
    tmp_path, monkeypatch, cgroup, files, expected
):
    fake_system(tmp_path, monkeypatch, cgroup, files)
    assert layout.available_memory() == expected


def test_available_memory_unknown(tmp_path, monkeypatch):
    fake_system(tmp_path, monkeypatch, "", {})
    (tmp_path / "meminfo").unlink()
    assert layout.available_memory() is None
