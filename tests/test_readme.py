"""Every command block of README.md and docs/, run as written, in order, on tiny synthetic data.

The ``make`` lines run in a scratch folder that stands in for a fresh checkout: there, the
configs in ``study_configs/`` keep their study names, search spaces, samplers and pruners but
train 1 epoch on 100 / 50 synthetic images, and the default storage (``storage/optuna.db``),
``exports/`` and ``reports/`` are the scratch folder's. What the test changes on a line, and why:

- any ``DATA_DIR=...`` names the synthetic folder, as does the environment for lines without one
  (the test cannot download CIFAR-10);
- ``TRIALS`` above ``MAX_TRIALS``, ``SEEDS`` and ``WORKERS`` above ``MAX_RUNS`` become those, and
  ``confirm`` without ``SEEDS`` runs ``MAX_RUNS`` seeds, not its default 3: the counts change
  nothing in the flow;
- ``my-study`` (the docs' placeholder) becomes ``MY_STUDY``, a study the lines before ran;
- ``PORT`` is 0 (the environment's ``PORT``): the dashboard takes a free port and prints it;
  ``make`` is told that ``.venv`` is set up.

Every other command line must match one of ``NOT_RUN``, each with its reason. The pages run in
``PAGES`` order, one scratch folder for all, so a page may act on the studies run before it;
every relative link in them must name a file (and heading) of the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from search.testing import REPO, make_cifar_folder

MAX_TRIALS = 2
MAX_RUNS = 2
MY_STUDY = "cifar10-smoke"
NOISE = ("absl", "cuInit", "oneDNN", "cudart", "I0000", "E0000", "W0000")  # TensorFlow's C++ lines
NOT_RUN = {
    "make test": "the test suite, which runs this test",
    "make bench": "the benchmarks: about 12 minutes, not part of make test",
    "db-host": "the PostgreSQL recipe: a database host and other machines",
    "@db/": "a PostgreSQL server on another machine",
    "sudo ": "root on the database host",
    "echo 'db-host": "writes the user's ~/.pgpass",
    "python -m bench": "the benchmarks: minutes each",
    "docker ": "the container recipes: Docker and a registry",
    "kubectl ": "the Kubernetes recipes: a cluster",
    "sbatch ": "the Slurm recipes: a Slurm cluster",
    "export SEARCH_": "the deploy recipes' shell settings, with a database of their own",
    "openssl rand": "the Compose recipe's password",
    "deploy/.env": "writes the Compose recipe's settings",
    "deploy/secrets": "writes the Compose recipe's secrets",
}


PAGES = ("README.md", "docs/options.md", "docs/configs.md", "docs/fleet.md", "docs/fleet-bench.md",
         "docs/deploy.md", "docs/dashboard.md", "docs/results.md", "docs/measured.md", "docs/benchmarks.md")


def readme_lines() -> list[str]:
    """The command lines of the pages' ```bash and ```sh blocks, comments dropped, continuations joined."""
    blocks = [block for page in PAGES
              for block in re.findall(r"^ *```(?:bash|sh)\n(.*?)^ *```", (REPO / page).read_text(), re.S | re.M)]
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def skipped(line: str) -> str | None:
    return next((reason for key, reason in NOT_RUN.items() if key in line), None)


def as_run(line: str, data: Path) -> list[str]:
    words = shlex.split(line)
    assert words[0] == "make", line
    changed = []
    for word in words[1:]:
        name, assigns, value = word.partition("=")
        if name == "DATA_DIR":
            value = str(data)
        elif name == "TRIALS":
            value = str(min(int(value), MAX_TRIALS))
        elif name in ("SEEDS", "WORKERS"):
            value = str(min(int(value), MAX_RUNS))
        changed.append(f"{name}={value.replace('my-study', MY_STUDY)}" if assigns else word)
    if words[1] == "confirm" and not any(word.startswith("SEEDS=") for word in words):
        changed.append(f"SEEDS={MAX_RUNS}")
    return ["make", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", f"PY={sys.executable}",
            *changed]


def tiny_configs(folder: Path) -> None:
    (folder / "study_configs").mkdir()
    for source in (REPO / "study_configs").glob("*.yaml"):
        raw = yaml.safe_load(source.read_text())
        raw["data"] = {**raw.get("data", {}), "train_size": 100, "val_size": 50}
        raw["training"] = {**raw.get("training", {}), "epochs": 1, "batch_size": 50}
        (folder / "study_configs" / source.name).write_text(yaml.safe_dump(raw))


def serve_until_it_answers(command: list[str], cwd: Path, env: dict) -> str:
    """Start the dashboard, wait for its page at the address it prints, stop it (Ctrl-C); return
    what it printed."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "".join(printed)
            address = next((m[1] for line in printed if (m := re.search(r"at (http://\S+/dashboard)", line))),
                           None)
            try:
                assert address, "no address printed yet"
                with urllib.request.urlopen(address, timeout=5) as page:
                    assert page.status == 200
                    break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, f"the dashboard did not answer: {''.join(printed)}"
                time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(timeout=10)
    return "".join(printed)


def test_every_command_line_is_run_or_listed():
    lines = readme_lines()
    assert any(line.startswith("make search TRIALS=5 CONFIG=study_configs/smoke.yaml") for line in lines)
    for line in lines:
        assert line.startswith("make ") or skipped(line), f"README line neither run nor listed: {line}"
    unused = [key for key in NOT_RUN if not any(key in line for line in lines)]
    assert not unused, f"NOT_RUN entries that match no README line: {unused}"


def run_to_the_end(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run ``command`` in a session of its own; however the test ends (a failure, a timeout), the
    whole session is stopped: make, the search under it and its workers."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=900)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.timeout(2400)  # some 25 commands, each starting TensorFlow
def test_the_readme_runs_as_written(tmp_path):
    data = make_cifar_folder(tmp_path / "cifar-10-batches-py")
    home = tmp_path / "checkout"
    home.mkdir()
    tiny_configs(home)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_DIR": str(data), "PORT": "0"}
    for name in ("CONFIG", "STUDY", "STORAGE", "TRIALS", "WORKERS", "TIMEOUT", "TOP", "FULL", "VERBOSE"):
        env.pop(name, None)
    outputs: list[tuple[str, str]] = []
    for line in readme_lines():
        if skipped(line):
            continue
        command = as_run(line, data)
        if line.split()[:2] == ["make", "dashboard"]:
            output = serve_until_it_answers(command, home, env)
        else:
            result = run_to_the_end(command, home, env)
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
            noise = [s for s in result.stderr.splitlines() if any(word in s for word in NOISE)]
            assert not noise, f"{line}: TensorFlow's start-up lines on stderr: {noise}"
            output = result.stdout + result.stderr
        outputs.append((line, output))

    # The opening flow acts on the study just run, the only one yet: the smoke study.
    flow = [i for i, (line, _) in enumerate(outputs) if "CONFIG=study_configs/smoke.yaml" in line][0]
    after = {line.split()[1]: out for line, out in outputs[flow + 1: flow + 5]}
    assert set(after) == {"dashboard", "export", "retrain", "report"}
    picked = "study cifar10-smoke (the only one in sqlite:///storage/optuna.db)"
    assert picked in after["export"] and picked in after["retrain"]
    assert "wrote exports/cifar10-smoke/best.yaml" in after["export"]
    assert "test accuracy" in after["retrain"] and "the search's trial" in after["retrain"]
    assert "wrote reports/cifar10-smoke.html" in after["report"]
    assert "optuna-dashboard at http://127.0.0.1:" in after["dashboard"]
    # The full search's flow: confirmed, then exported by the confirmed means.
    full = {line.split()[1]: out for line, out in outputs[flow + 5: flow + 8]}
    assert set(full) == {"search", "confirm", "export"}
    assert "confirmed val_accuracy (fresh seeds" in full["confirm"], full["confirm"]
    assert "wrote exports/cifar10-regularization/best.yaml" in full["export"]
    assert yaml.safe_load((home / "exports/cifar10-regularization/best.yaml").read_text())["confirmed"] is True
    for path in ("exports/cifar10-smoke/model.keras", "exports/cifar10-regularization/best.yaml",
                 "exports/cifar10-smoke/top.yaml", "reports/cifar10-regularization.html"):
        assert (home / path).is_file(), path


def _anchors(page: Path) -> set[str]:
    """GitHub's ids for the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert {str(p.relative_to(REPO)) for p in pages} == set(PAGES), "a page missing from PAGES"
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)}: link {target}"
            assert resolved.is_relative_to(REPO) and resolved.exists(), f"{where}: no such file"
            assert not anchor or anchor in _anchors(resolved), f"{where}: no such heading"
            checked += 1
    assert checked >= 7  # the README's links to docs/ at least
