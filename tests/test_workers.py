"""Many workers on one study, through the real CLI: exact budgets, no duplicates, placement."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.testing import start_search, tiny_raw
from search.workers import Budget, WorkerSpec, place_workers


def start(tmp_path: Path, cifar_dir: Path, url: str, trials: int, workers: int,
          **storage: object) -> subprocess.Popen:
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50},
                   training={"epochs": 1, "batch_size": 50})
    raw["storage"].update(storage)
    return start_search(raw, tmp_path, url, trials, workers, cifar_dir, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url", "mysql_url"])
def test_four_workers_run_exactly_the_budget(backend, request, tmp_path, cifar_dir):
    url = request.getfixturevalue(backend)
    process = start(tmp_path, cifar_dir, url, trials=5, workers=4)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    done = trials(url)
    assert len(done) == 5 and all(t.state == TrialState.COMPLETE for t in done), output
    params = {tuple(sorted(t.params.items())) for t in done}
    assert len(params) == 5  # no duplicate parameter sets
    assert len({t.user_attrs["sampler_seed"] for t in done}) == len({t.user_attrs["worker"] for t in done})
    assert "locked" not in output and "Traceback" not in output
    assert "ran 5 trials" in output


def test_budget_is_exact_across_takers():
    budget = Budget(3)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    unlimited = Budget(None)
    assert all(unlimited.take() for _ in range(100))


def test_workers_get_a_gpu_each_or_a_share_of_the_cores(tiny_config):
    base = WorkerSpec(tiny_config, None, "tiny", None)
    on_gpus = place_workers(base, 3, ["0", "1"], cores=16)
    assert [(s.index, s.gpu, s.threads) for s in on_gpus] == [(0, "0", None), (1, "1", None), (2, "0", None)]
    on_cpu = place_workers(base, 4, [], cores=16)
    assert [(s.gpu, s.threads) for s in on_cpu] == [(None, 4)] * 4
    assert place_workers(base, 4, [], cores=2)[0].threads == 1


def test_a_single_worker_is_placed_and_records_its_device_truly(tiny_config):
    base = WorkerSpec(tiny_config, None, "tiny", None)
    (on_gpu,) = place_workers(base, 1, ["3"], cores=16)
    assert on_gpu.gpu == "3" and on_gpu.device == "GPU 3"
    (on_cpu,) = place_workers(base, 1, [], cores=16)
    assert on_cpu.threads is None and on_cpu.device == "CPU, all cores"
    assert place_workers(base, 2, [], cores=16)[1].device == "CPU, 8 threads"
