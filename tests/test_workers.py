"""Many workers and many launches on one study, through the real CLI: exact budgets, no
duplicates, each command counting its own trials, one definition, placement."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.base.config import parse_config
from search.base.seeds import derive_seed
from search.interfaces.cli import main
from search.running.progress import Monitor
from search.running.runner import SearchRequest, run_search, summary
from search.running.workers import Budget, WorkerSpec, launch_seed, place_workers
from search.testing import REPO, start_search, tiny_raw
from search.tuning import study as study_module
from search.tuning.storage import StorageOpener, open_storage
from search.tuning.study import prepare_study


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


def test_budget_stops_after_failures_in_a_row_from_any_worker():
    budget = Budget(None, max_failures=2)
    assert [budget.record(failed) for failed in (True, False, True)] == [1, 0, 1]
    assert budget.take()
    assert budget.record(True) == 2  # the worker that sees the limit reached says so
    assert not budget.take() and budget.record(True) == 3


def test_every_launch_gets_its_own_seed_unless_it_replays_one(tiny_config):
    seeds = {launch_seed() for _ in range(200)}  # same host, same moment, same study
    assert len(seeds) == 200 and all(0 <= s < 2**32 for s in seeds)
    assert launch_seed(replay=12345) == 12345
    sampler_seeds = {derive_seed(tiny_config.seed, launch, 0) for launch in seeds}
    assert len(sampler_seeds) == 200


def test_a_replayed_launch_samples_as_it_did(tmp_path, cifar_dir):
    config = parse_config(tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None,
                                   training={"epochs": 1, "batch_size": 50}), "tiny")
    sampled = []
    for name in ("first", "replayed"):  # the same (empty) history
        url = f"sqlite:///{tmp_path / name}.db"
        assert run_search(SearchRequest(config, 2, StorageOpener(url), data_dir=str(cifar_dir), replay=5)) == 0
        assert [t.user_attrs["launch"] for t in trials(url)] == [5, 5]
        sampled.append([t.params for t in trials(url)])
    assert sampled[0] == sampled[1]


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_two_launches_started_together_sample_apart_and_count_their_own(backend, request, tmp_path, cifar_dir):
    url = request.getfixturevalue(backend)
    raw = tiny_raw(tmp_path, data={"train_size": 100, "val_size": 50}, baseline=None,
                   training={"epochs": 1, "batch_size": 50})
    launches = [start_search(raw, tmp_path, url, 2, 1, cifar_dir, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outputs
    done = trials(url)
    assert len(done) == 4 and len({tuple(sorted(t.params.items())) for t in done}) == 4
    for output in outputs:
        (seed,) = map(int, re.findall(r"^launch seed (\d+):", output, re.MULTILINE))
        own = [t for t in done if t.user_attrs["launch"] == seed]
        assert len(own) == 2 and {t.user_attrs["sampler_seed"] for t in own} == {derive_seed(1, seed, 0)}
        assert "ran 2 trials in" in output and ": 2 complete\n" in output
        assert len(re.findall(r"^trial +\d+ COMPLETE", output, re.MULTILINE)) == 2, output


def test_the_summary_and_progress_speak_of_this_launch_only(tmp_path, sqlite_url, capsys):
    config = parse_config(tiny_raw(tmp_path, baseline=None), "tiny")
    storage = open_storage(sqlite_url)
    study, _ = prepare_study(config, storage)
    space = {"l1": FloatDistribution(0, 1), "l2": FloatDistribution(0, 1), "dropout": FloatDistribution(0, 1)}

    def add(launch: int, value: float | None) -> None:
        state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        study.add_trial(create_trial(params={"l1": value or 0.0, "l2": 0.0, "dropout": 0.0},
                                     distributions=space, value=value, state=state,
                                     user_attrs={"launch": launch, "epochs_run": 2 if value else "1"}))

    add(7, 0.9)  # an earlier launch with the same seed (replayed): before this one started
    for launch, value in [(7, 0.5), (8, 0.8), (7, None), (8, 0.7), (7, 0.6)]:  # two at once
        add(launch, value)
    spec = WorkerSpec(config, sqlite_url, "tiny", None, launch=7)
    text = summary(study, spec, 1, storage, 60.0, [0])
    assert text.splitlines()[:4] == [
        "ran 3 trials in 1.0 min: 2 complete, 1 fail",
        "epochs: 4 trained of the 6 of these trials unpruned (67%)",  # "1", not a count, is left out
        "baseline: none in this study",  # one best, the study's: the launch's own is no other best
        "best by search (one run each, unconfirmed): trial 0, val_accuracy 0.9000 (l1 0.9, l2 off, dropout 0)",
    ]
    assert "(study 'tiny', 6 trials in all)" in text
    with Monitor(study, 1, 3, 3, interval=3600, launch=7):
        pass
    shown = re.findall(r"^trial +(\d+)", capsys.readouterr().out, re.MULTILINE)
    assert shown == ["1", "3", "5"]


RACER = """
import sys, time
from pathlib import Path
import search.running.runner
search.running.runner.run_worker = lambda *args, **kwargs: 0  # the creation is what races: no trials
from search.interfaces.cli import main
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_racing_creators_with_different_configs_leave_one_definition(backend, request, tmp_path, cifar_dir):
    url = request.getfixturevalue(backend)
    for round in range(3):
        if backend == "sqlite_url":  # a fresh file: the tables are created in the race too
            url = f"sqlite:///{tmp_path / f'race{round}.db'}"
        name, racers, gate = f"race-{round}", [], tmp_path / f"go{round}"
        for epochs in (1, 2):
            config = tmp_path / f"race{round}-{epochs}.yaml"
            config.write_text(yaml.safe_dump(tiny_raw(tmp_path, study_name=name, training={"epochs": epochs})))
            ready = tmp_path / f"ready{round}-{epochs}"
            args = ["search", "--config", str(config), "--storage", url, "--data-dir", str(cifar_dir),
                    "--workers", "1"]  # in the process, where run_worker is stubbed
            racers.append((ready, subprocess.Popen([sys.executable, "-c", RACER, str(ready), str(gate), *args],
                                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   text=True)))
        deadline = time.monotonic() + 120
        while not all(ready.exists() for ready, _ in racers):
            assert all(p.poll() is None for _, p in racers), [p.communicate() for _, p in racers]
            assert time.monotonic() < deadline, "the racers did not get ready"
            time.sleep(0.05)
        gate.touch()  # both start now
        results = [(p.wait(timeout=120), *p.communicate()) for _, p in racers]
        codes = [code for code, _, _ in results]
        assert sorted(codes) == [0, 2], results
        (loser_err,) = [err for code, _, err in results if code == 2]
        assert len(loser_err.splitlines()) == 1, loser_err
        assert f"study {name!r} was started with another definition" in loser_err
        winner_epochs = 1 + codes.index(0)
        study = optuna.load_study(study_name=name, storage=url)
        assert study.user_attrs["fingerprint"]["training"]["epochs"] == winner_epochs
        assert [s.study_name for s in optuna.get_all_study_summaries(url)].count(name) == 1


def foreign_study(url: str, kind: str) -> optuna.Study:
    """A study made by plain Optuna (or something else) under the name ``tiny``."""
    directions = {"plain": ["maximize"], "minimize": ["minimize"], "forged": ["minimize"],
                  "multi": ["maximize", "maximize"], "forged-multi": ["maximize", "maximize"]}[kind]
    study = optuna.create_study(storage=url, study_name="tiny", directions=directions)
    if kind.startswith("forged"):  # our definition copied onto another kind of study
        config = parse_config(tiny_raw(Path("/nonexistent")), "tiny")
        study.set_user_attr("config", config.model_dump(mode="json"))
        study.set_user_attr("fingerprint", config.fingerprint())
    return study


@pytest.mark.parametrize("kind", ["plain", "minimize", "forged", "multi", "forged-multi"])
def test_a_study_made_by_plain_optuna_is_refused_never_adopted(kind, monkeypatch, tmp_path, cifar_dir,
                                                               sqlite_url, capsys):
    monkeypatch.setattr(study_module, "DEFINITION_WAIT_SECONDS", 0.1)
    study = foreign_study(sqlite_url, kind)
    before = (study.user_attrs, study.directions, len(study.trials))
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    common = ["--storage", sqlite_url, "--data-dir", str(cifar_dir), "--trials", "1"]
    for args in (["search", "--config", str(config)], ["worker", "--study", "tiny"]):
        assert main([*args, *common]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "was not created by this tool" in err, err
    after = optuna.load_study(study_name="tiny", storage=sqlite_url)
    assert (after.user_attrs, after.directions, len(after.trials)) == before


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
