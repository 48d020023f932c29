"""The command line as users call it: exit codes, one-line errors, nothing written on bad input."""

import argparse
import os
import subprocess
import sys

import optuna
import pytest
import yaml

from search.interfaces.cli import build_parser, main
from search.testing import REPO, tiny_raw

TF_NOISE = ("absl", "cuInit", "oneDNN", "cudart", "I0000", "E0000", "W0000")  # TensorFlow's C++ lines


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "search", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def write_config(tmp_path, raw):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_options():
    result = cli("search", "--help")
    assert result.returncode == 0
    for flag in ("--config", "--trials", "--workers", "--timeout", "--storage", "--study", "--data-dir", "-v"):
        assert flag in result.stdout


def test_every_option_shows_its_default():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in [("", parser), *commands.choices.items()]:
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert "default" in action.help, f"{name} {action.option_strings[0]}: {action.help}"
    worker_study = next(a for a in commands.choices["worker"]._actions if a.dest == "study")
    assert "most recent study" in worker_study.help and "default: the config's study_name)" not in worker_study.help


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["search", "--trials", "0"], ["--trials", "at least 1"]),
        (["search", "--workers", "many"], ["--workers", "not an integer"]),
        (["search", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["frobnicate"], ["invalid choice"]),
        (["search", "--timeout", "soon"], ["--timeout", "not a number of minutes"]),
        (["worker", "--timeout", "-1"], ["--timeout", "positive number of minutes"]),
    ],
)
def test_bad_flags(args, fragments):
    assert_one_line_error(cli(*args), *fragments)


def test_bad_config_touches_no_storage(tmp_path, cifar_dir):
    raw = tiny_raw(tmp_path)
    raw["training"]["epochs"] = -1
    db = tmp_path / "optuna.db"
    result = cli("search", "--config", write_config(tmp_path, raw), "--storage", f"sqlite:///{db}",
                 "--data-dir", str(cifar_dir))
    assert_one_line_error(result, "study.yaml", "training.epochs")
    assert not db.exists()


@pytest.mark.parametrize("artifacts, fragment", [
    ("a\0b", "holds a NUL"),  # as the YAML escape "\0" gives it
    ("a" * 5000, "too long (5,000 characters"),
])
def test_a_path_no_file_system_takes_touches_no_storage(tmp_path, cifar_dir, artifacts, fragment):
    raw = tiny_raw(tmp_path, storage={"artifacts": artifacts})
    db = tmp_path / "optuna.db"
    result = cli("search", "--config", write_config(tmp_path, raw), "--storage", f"sqlite:///{db}",
                 "--data-dir", str(cifar_dir))
    assert_one_line_error(result, "study.yaml", "storage.artifacts", fragment)
    assert not db.exists()


def test_missing_config_file(tmp_path):
    assert_one_line_error(cli("search", "--config", str(tmp_path / "none.yaml")), "config file not found")


def test_bad_data_dir_touches_no_storage(tmp_path):
    db = tmp_path / "optuna.db"
    result = cli("search", "--config", write_config(tmp_path, tiny_raw(tmp_path)),
                 "--storage", f"sqlite:///{db}", "--data-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(result, "DATA_DIR", "nowhere")
    assert not db.exists()


def test_a_search_prints_a_line_per_trial_and_a_summary(tmp_path, cifar_dir):
    raw = tiny_raw(tmp_path)
    raw["training"]["epochs"] = 1
    db = tmp_path / "optuna.db"
    result = cli("search", "--config", write_config(tmp_path, raw), "--storage", f"sqlite:///{db}",
                 "--data-dir", str(cifar_dir), "--trials", "2")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "trial 0 (baseline) COMPLETE l1=off " in output and "trial 1 COMPLETE" in output
    assert "val_accuracy=" in output and "epochs=1" in output
    assert "best by search (one run each, unconfirmed): " in result.stdout
    assert f"storage: sqlite:///{db} (study 'tiny', 2 trials in all)" in result.stdout
    assert "\r" not in result.stdout  # not a terminal: no redraws
    noise = [line for line in result.stderr.splitlines() if any(w in line for w in TF_NOISE)]
    assert not noise, result.stderr


def test_tensorflow_loads_quietly_unless_verbose():
    load = ("import sys; from search.learning.quiet import set_verbosity, import_tensorflow; "
            "set_verbosity({}); import_tensorflow(); import tensorflow as tf; "
            "tf.config.list_physical_devices('GPU'); print('after', file=sys.stderr)")
    # an inherited level 2 (bench sets it) would let CUDA's "failed call to cuInit" through
    quiet = subprocess.run([sys.executable, "-c", load.format(False)], capture_output=True, text=True,
                           cwd=REPO, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert quiet.returncode == 0 and quiet.stderr == "after\n"  # stderr is back after the import
    loud = subprocess.run([sys.executable, "-c", load.format(True) + "; import os; "
                           "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"], capture_output=True,
                          text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 0 and loud.stdout == "0\n" and loud.stderr.endswith("after\n")


def test_a_worker_joins_a_study_with_the_config_stored_on_it(tmp_path, cifar_dir):
    raw = tiny_raw(tmp_path)
    raw["training"]["epochs"] = 1
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    started = cli("search", "--config", write_config(tmp_path, raw), "--storage", url,
                  "--data-dir", str(cifar_dir), "--trials", "1")
    assert started.returncode == 0, started.stderr
    elsewhere = tmp_path / "other-machine"  # no config file here: the study carries it
    elsewhere.mkdir()
    joined = cli("worker", "--storage", url, "--trials", "1", "--data-dir", str(cifar_dir), cwd=elsewhere)
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.startswith(f"study tiny (the only one in {url})\n")
    assert "(study 'tiny', 2 trials in all)" in joined.stdout
    assert_one_line_error(cli("worker", "--storage", url, "--study", "nope"), "no study named 'nope'")


def add_study(url, tmp_path, name, states=()):
    """A study as ``search`` creates it, with trials in ``states`` (in this order, no training)."""
    from search.base.config import parse_config
    from search.tuning.storage import open_storage
    from search.tuning.study import prepare_study

    study, _ = prepare_study(parse_config(tiny_raw(tmp_path, study_name=name), name), open_storage(url))
    space = {p: optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True) for p in ("l1", "l2")}
    for state in states:
        trial = study.ask({**space, "dropout": optuna.distributions.FloatDistribution(0.0, 0.7)})
        if state == "complete":
            trial.report(0.5, 1)
            study.tell(trial, 0.5)
    return study


def test_without_study_the_only_or_the_most_recent_is_used(tmp_path, sqlite_url, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # exports/ goes here
    add_study(sqlite_url, tmp_path, "older", ["complete"])
    assert main(["export", "--storage", sqlite_url]) == 0
    assert capsys.readouterr().out.startswith(f"study older (the only one in {sqlite_url})\n")
    add_study(sqlite_url, tmp_path, "newer", ["complete"])
    add_study(sqlite_url, tmp_path, "empty")
    assert main(["export", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"study newer (the most recent of 3 in {sqlite_url}; STUDY=... picks another)\n")
    assert "wrote exports/newer/best.yaml" in out
    add_study(sqlite_url, tmp_path, "older", ["running"])  # a running trial: active now
    assert main(["export", "--storage", sqlite_url]) == 0
    assert capsys.readouterr().out.startswith("study older (the most recent of 3")
    # STUDY, or a config's study_name, names it: no line about a choice
    config = write_config(tmp_path, tiny_raw(tmp_path, study_name="newer"))
    for named in (["--study", "newer"], ["--config", config]):
        assert main(["export", "--storage", sqlite_url, *named]) == 0
        assert capsys.readouterr().out == "wrote exports/newer/best.yaml\nwrote exports/newer/best.json\n"


@pytest.mark.parametrize("command", ["export", "retrain", "worker"])
def test_when_no_study_can_be_chosen_the_error_lists_them(tmp_path, sqlite_url, capsys, command):
    add_study(sqlite_url, tmp_path, "b-study")  # no trials: nothing is more recent
    optuna.create_study(study_name="a study", storage=sqlite_url)  # not ours; any name
    assert main([command, "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: no study in {sqlite_url} has run a trial yet")
    assert err.endswith(f"it holds 'a study', 'b-study'; pick one with STUDY=..., e.g. make {command} "
                        "STUDY='a study'\n")
    if command != "retrain":  # which with STUDY reads exports/<STUDY>/ and needs no storage
        assert main([command, "--storage", sqlite_url, "--study", "c"]) == 2
        err = capsys.readouterr().err
        assert f"error: no study named 'c' in {sqlite_url}: it holds 'a study', 'b-study';" in err


@pytest.mark.parametrize("command", [("worker", "--trials", "1"), ("confirm", "--top", "1", "--seeds", "1"),
                                     ("export",), ("report",)])
def test_a_command_opens_the_storage_once(command, monkeypatch, tmp_path, cifar_dir, sqlite_url):
    """Picking the study, reading its config, running and summing up share one handle."""
    from search.running import runner
    from search.tuning import storage

    add_study(sqlite_url, tmp_path, "tiny", ["complete"])
    opened, real = [], storage.open_storage
    monkeypatch.setattr(storage, "open_storage", lambda *a, **k: opened.append(a) or real(*a, **k))
    monkeypatch.setattr(runner, "run_worker", lambda *a, **k: 0)  # what trials do is not the point
    monkeypatch.chdir(tmp_path)  # export and report write there
    data = ("--data-dir", str(cifar_dir)) if command[0] in ("worker", "confirm") else ()
    assert main([command[0], "--storage", sqlite_url, *command[1:], *data]) == 0
    assert len(opened) == 1
