"""The command line as users call it: exit codes, one-line errors, nothing written on bad input."""

import os
import subprocess
import sys

import pytest
import yaml

from search.testing import REPO, tiny_raw


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
    for flag in ("--config", "--trials", "--workers", "--storage", "--study", "--data-dir"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["search", "--trials", "0"], ["--trials", "at least 1"]),
        (["search", "--workers", "many"], ["--workers", "not an integer"]),
        (["search", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["frobnicate"], ["invalid choice"]),
        (["worker", "--trials", "1"], ["worker needs --study"]),
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
    for number in (0, 1):
        assert f"trial    {number} COMPLETE" in output
    assert "l1=" in output and "val_accuracy=" in output and "epochs=1" in output
    assert "best: trial" in result.stdout
    assert f"storage: sqlite:///{db} (study 'tiny', 2 trials in all)" in result.stdout


def test_a_worker_joins_a_study_with_the_config_stored_on_it(tmp_path, cifar_dir):
    raw = tiny_raw(tmp_path)
    raw["training"]["epochs"] = 1
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    started = cli("search", "--config", write_config(tmp_path, raw), "--storage", url,
                  "--data-dir", str(cifar_dir), "--trials", "1")
    assert started.returncode == 0, started.stderr
    elsewhere = tmp_path / "other-machine"  # no config file here: the study carries it
    elsewhere.mkdir()
    joined = cli("worker", "--storage", url, "--study", "tiny", "--trials", "1",
                 "--data-dir", str(cifar_dir), cwd=elsewhere)
    assert joined.returncode == 0, joined.stderr
    assert "(study 'tiny', 2 trials in all)" in joined.stdout
    assert_one_line_error(cli("worker", "--storage", url, "--study", "nope"), "no study named 'nope'")
