"""``make`` honours the environment: ``SEARCH_<FLAG>`` set by the caller holds unless the make
variable is given, for every variable the Makefile passes, through real ``make`` runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from search.testing import REPO

# variable, a target that reads it: a bad value stops that target in one line naming the value
PASSED = [
    ("STORAGE", "export"),
    ("STUDY", "export"),
    ("CONFIG", "search"),
    ("TRIALS", "search"),
    ("WORKERS", "search"),
    ("TIMEOUT", "search"),
    ("PORT", "dashboard"),
    ("TOP", "export"),
    ("SEEDS", "confirm"),
]


def make(target: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    # as from a user's shell: no SEARCH_* of ours, nor an outer make's (``make test`` sets MAKELEVEL,
    # which would turn "make:" into "make[1]:" and pass its flags down)
    outer = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", *dict(PASSED)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEARCH_") and k not in outer}
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "-o", ".venv/.installed", f"PY={sys.executable}", target, *args],
        cwd=REPO, env={**clean, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=120,
    )


def refused(done: subprocess.CompletedProcess, value: str) -> bool:
    lines = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    return done.returncode == 2 and len(lines) == 1 and value in lines[0]


@pytest.mark.parametrize("variable, target", PASSED)
def test_the_environment_holds_unless_the_make_variable_is_given(variable, target):
    from_env, given = "no such /env-value:", "no such /make-value:"
    done = make(target, **{f"SEARCH_{variable}": from_env})
    assert refused(done, from_env), done.stderr
    done = make(target, f"{variable}={given}", **{f"SEARCH_{variable}": from_env})
    assert refused(done, given) and from_env not in done.stderr, done.stderr
    done = make(target, **{variable: given, f"SEARCH_{variable}": from_env})  # make reads its environment
    assert refused(done, given), done.stderr


def test_sqlite_storage_from_the_environment_is_the_one_used(tmp_path):
    env_db, given_db = tmp_path / "env.db", tmp_path / "given.db"
    done = make("export", SEARCH_STORAGE=f"sqlite:///{env_db}")
    assert done.returncode == 2 and f"{env_db}: no such database file" in done.stderr, done.stderr
    done = make("export", f"STORAGE=sqlite:///{given_db}", SEARCH_STORAGE=f"sqlite:///{env_db}")
    assert done.returncode == 2 and f"{given_db}: no such database file" in done.stderr, done.stderr
    assert not env_db.exists() and not given_db.exists()


def test_a_shells_own_host_variable_never_reaches_the_dashboard():
    done = make("dashboard", "PORT=p", HOST="elsewhere.invalid")  # tcsh sets HOST
    assert refused(done, "'p'") and "elsewhere" not in done.stderr


@pytest.mark.parametrize("target", ["search", "worker", "dashboard", "export", "confirm", "retrain", "report"])
def test_verbose_reaches_every_command(target):
    done = make(target, "-n", "VERBOSE=1")
    assert done.returncode == 0 and f"-m search {target} " in done.stdout and "--verbose" in done.stdout, done
    assert "--verbose" not in make(target, "-n").stdout
