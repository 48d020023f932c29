"""deploy/, checked offline: the Kubernetes manifests against the API schemas, the Dockerfiles with
hadolint, the compose file's services, and the Slurm array script run for real on SQLite.

No container is built and no cluster is reached here: what these checks cannot see (an image that
builds, pods that schedule, a volume class, the network) is listed in docs/deploy.md.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from search.base.config import load_config
from search.interfaces.cli import build_parser
from search.interfaces.dashboard import Guard, allowed_hosts
from search.testing import REPO, tiny_raw, unavailable

DEPLOY = REPO / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").rglob("*.yaml"))
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "pgbouncer" / "Dockerfile"]
COMPOSE = DEPLOY / "compose.yaml"
SBATCH = DEPLOY / "slurm" / "workers.sbatch"
# The oldest and the newest Kubernetes that kubernetes-validate 1.37.0 carries schemas for.
KUBERNETES_VERSIONS = ("1.34.0", "1.37.0")
BIN = Path(sys.executable).parent
SEARCH_SERVICES = ("create", "worker", "dashboard")  # the compose services running the image
ENV_SUBSTITUTION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")  # compose's ${VAR}, ${VAR:-default}


def resources() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource(kind: str, name: str) -> dict:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod_specs() -> dict[str, dict]:
    """Every pod of the manifests (a Pod's spec, or a Job's or Deployment's template), by name."""
    return {r["metadata"]["name"]: r["spec"] if r["kind"] == "Pod" else r["spec"]["template"]["spec"]
            for r in resources() if r["kind"] in ("Pod", "Job", "Deployment")}


def runs_search(container: dict) -> bool:
    """Whether a container runs the image's entrypoint, ``python -m search``."""
    return container["image"].startswith("search:") and "command" not in container


def settings() -> dict[str, str]:
    return resource("ConfigMap", "search-settings")["data"]


def kubernetes_validate(paths: list[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "kubernetes-validate", "--strict", "--quiet", "-k", version, *map(str, paths)],
        capture_output=True, text=True, check=False,
    )


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "hadolint", "--no-color", str(path)], capture_output=True, text=True,
                          check=False)


def grace_seconds() -> int:
    """The heartbeat's grace period of the config the pods run (SEARCH_CONFIG, in the image)."""
    return load_config(REPO / settings()["SEARCH_CONFIG"]).storage.grace_period


def parse_command(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> argparse.Namespace:
    """``python -m search ARGS`` as the container's command line would parse it, with its env."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_parser().parse_args(args)


def command_help(command: str) -> str:
    """``python -m search COMMAND --help``: it names each SEARCH_ variable the command reads."""
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(shown.getvalue().split())  # as one line: argparse wraps its help


def env_of(container: dict) -> dict[str, str]:
    """A container's literal environment: its ConfigMaps and plain values (not its secrets)."""
    env = {}
    for source in container.get("envFrom", []):
        env.update(resource("ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of a container argument."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], text)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(text: str) -> str:
    """Compose's interpolation with every variable unset: its default, or a stand-in."""
    return ENV_SUBSTITUTION.sub(lambda m: m[2] if m[2] is not None and "?" not in m[0] else "x", text)


# Kubernetes


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_strict_schema_validation(version: str):
    assert len(MANIFESTS) >= 5
    result = kubernetes_validate(MANIFESTS, version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_applying_the_folder_starts_nothing_and_overwrites_no_secret():
    """``kubectl apply -f deploy/k8s/`` (not recursive) makes the base only: the Jobs run in their
    order from jobs/, the placeholder Secrets stay in secrets/ for reference, tools/ is run by hand."""
    kinds: dict[str, set[str]] = {}
    for path in MANIFESTS:
        folder = str(path.parent.relative_to(DEPLOY))
        kinds.setdefault(folder, set()).update(d["kind"] for d in yaml.safe_load_all(path.read_text()))
    assert kinds.keys() == {"k8s", "k8s/jobs", "k8s/secrets", "k8s/tools"}
    assert not kinds["k8s"] & {"Secret", "Job", "Pod"}
    assert kinds["k8s/jobs"] == {"Job"} and kinds["k8s/secrets"] == {"Secret"}


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path):
    """The check above can fail: a field Kubernetes does not know is refused, not ignored."""
    job = resource("Job", "search-workers")
    job["spec"]["completionmode"] = job["spec"].pop("completionMode")
    broken = tmp_path / "workers.yaml"
    broken.write_text(yaml.safe_dump(job))
    result = kubernetes_validate([broken], KUBERNETES_VERSIONS[0])
    assert result.returncode != 0 and "completionmode" in result.stdout + result.stderr


def test_the_gpu_variant_validates_and_requests_one_gpu(tmp_path: Path):
    source = (DEPLOY / "k8s" / "jobs" / "workers.yaml").read_text()
    assert "#gpu " in source
    variant = tmp_path / "workers-gpu.yaml"
    variant.write_text(source.replace("#gpu ", ""))
    result = kubernetes_validate([variant], KUBERNETES_VERSIONS[0])
    assert result.returncode == 0, result.stdout + result.stderr
    (container,) = yaml.safe_load(variant.read_text())["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_workers_are_an_indexed_job_that_outlives_the_heartbeat_grace():
    job = resource("Job", "search-workers")["spec"]
    assert job["completionMode"] == "Indexed" and job["backoffLimitPerIndex"] >= 1
    assert job["completions"] == job["parallelism"] >= 1
    bad_input = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailIndex"]
    assert bad_input[0]["onExitCodes"]["values"] == [2]  # exit 2 is bad input: not retried
    for name in ("search-workers", "search-create-study"):
        pod = pod_specs()[name]
        assert pod["restartPolicy"] == "Never"
        assert pod["terminationGracePeriodSeconds"] > grace_seconds()


def test_the_create_job_runs_the_search_command_and_the_workers_join(monkeypatch: pytest.MonkeyPatch):
    (create,) = pod_specs()["search-create-study"]["containers"]
    (worker,) = pod_specs()["search-workers"]["containers"]
    args = parse_command(create["args"], env_of(create), monkeypatch)
    assert (args.command, args.trials, args.workers) == ("search", 1, 1)
    args = parse_command(worker["args"], env_of(worker), monkeypatch)
    assert args.command == "worker" and args.trials == int(settings()["SEARCH_TRIALS"])
    config = load_config(REPO / args.config)
    assert args.study == config.study_name  # the study the create Job makes from that config


def test_every_search_setting_is_an_option_of_its_command():
    """A misspelt SEARCH_ variable would be ignored silently: each must be one the command reads."""
    for name, pod in pod_specs().items():
        for container in pod["containers"]:
            if runs_search(container):
                help_text = command_help(container["args"][0])
                names = set(env_of(container)) | {e["name"] for e in container.get("env", [])}
                for variable in {n for n in names if n.startswith("SEARCH_")}:
                    assert f"[env {variable}]" in help_text, (name, variable)


def test_the_storage_url_comes_from_the_secret_only():
    secret = resource("Secret", "search-storage")
    for pod in pod_specs().values():
        for container in pod["containers"]:
            if runs_search(container):
                (storage,) = [e for e in container["env"] if e["name"] == "SEARCH_STORAGE"]
                assert storage["valueFrom"]["secretKeyRef"] == {"name": "search-storage", "key": "url"}
    assert "SEARCH_STORAGE" not in settings()
    assert resource("Secret", "search-pgbouncer")["stringData"]["userlist.txt"] == ""  # no login yet
    assert "url" in secret["stringData"]


def test_the_placeholder_storage_url_is_refused_in_one_line():
    """Applied as shipped, the Secret runs nothing: the workers say so and exit 2."""
    placeholder = resource("Secret", "search-storage")["stringData"]["url"]
    env = {**os.environ, "SEARCH_STORAGE": placeholder, "SEARCH_STUDY": "cifar10-regularization"}
    result = subprocess.run([sys.executable, "-m", "search", "worker"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not a SQLAlchemy URL" in result.stderr


def test_the_pooler_pools_transactions_and_the_url_names_it():
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read_string(resource("ConfigMap", "search-pgbouncer")["data"]["pgbouncer.ini"])
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    (container,) = pod_specs()["search-pgbouncer"]["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(ini["pgbouncer"]["auth_file"]).parent) in mounts
    service = resource("Service", "search-pgbouncer")["spec"]
    assert service["ports"][0]["port"] == int(ini["pgbouncer"]["listen_port"])
    example = resource("Secret", "search-storage")["stringData"]["url"].split()[-1]
    url = sqlalchemy.make_url(example)
    assert (url.host, url.port) == ("search-pgbouncer", service["ports"][0]["port"])
    assert url.database in ini["databases"]


def test_the_dashboard_is_read_only_and_inside_the_cluster_only(monkeypatch: pytest.MonkeyPatch):
    assert not {"Ingress", "Route", "Gateway"} & {r["kind"] for r in resources()}
    for r in resources():
        if r["kind"] == "Service":
            assert r["spec"]["type"] == "ClusterIP" and all("nodePort" not in p for p in r["spec"]["ports"])
    (container,) = pod_specs()["search-dashboard"]["containers"]
    env = {**env_of(container), "POD_NAMESPACE": "team-a"}
    args = parse_command([expand(a, env) for a in container["args"]], env, monkeypatch)
    assert args.command == "dashboard" and not args.allow_writes and args.host == "0.0.0.0"
    assert args.port == container["ports"][0]["containerPort"]
    guard = Guard(lambda environ, start: [b"ok"], allowed_hosts(args.host, args.port, args.allowed_host),
                  args.allow_writes)

    def status(method: str, host: str) -> str:
        answer: list[str] = []
        guard({"REQUEST_METHOD": method, "HTTP_HOST": host}, lambda s, headers: answer.append(s))
        return answer[0] if answer else "200 OK"

    service = resource("Service", "search-dashboard")["spec"]["ports"][0]["port"]
    for host in ("search-dashboard", f"search-dashboard:{service}", "search-dashboard.team-a.svc",
                 "search-dashboard.team-a.svc.cluster.local:8080", "localhost:8080"):
        assert status("GET", host) == "200 OK", host
    probe = container["readinessProbe"]["httpGet"]["httpHeaders"][0]["value"]
    assert status("GET", probe) == "200 OK"
    assert status("GET", "attacker.example:8080").startswith("403")  # DNS rebinding
    assert status("POST", "search-dashboard").startswith("403")  # read-only


def test_pods_run_as_the_images_non_root_users():
    users = {}
    for dockerfile in DOCKERFILES:
        (uid,) = re.findall(r"^USER (\d+)$", dockerfile.read_text(), re.MULTILINE)
        users[dockerfile.parent.name] = int(uid)
    for name, pod in pod_specs().items():
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        image = "pgbouncer" if container["image"].startswith("search-pgbouncer:") else "deploy"
        assert pod["securityContext"]["runAsUser"] == users[image] != 0, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


# PgBouncer


def pooler_ini(text: str, database_url: str, port: int, auth_file: Path) -> str:
    """A shipped pgbouncer.ini with only its addresses moved here: the local server, a free port."""
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read_string(text)
    url = sqlalchemy.make_url(database_url)
    for name, entry in ini["databases"].items():
        fields = dict(field.split("=", 1) for field in entry.split())
        fields.update(host=url.host, port=str(url.port), dbname=url.database)
        ini["databases"][name] = " ".join(f"{k}={v}" for k, v in fields.items())
    ini["pgbouncer"].update(listen_addr="127.0.0.1", listen_port=str(port), auth_file=str(auth_file))
    lines = [f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in ini[section].items())
             for section in ini.sections()]
    return "\n".join(lines)


@contextlib.contextmanager
def pooler(ini_text: str, database_url: str, userlist: str) -> Iterator[int]:
    """Debian's PgBouncer (the image's) on a shipped config, in front of the local PostgreSQL."""
    binary = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
    if binary is None:
        message = "no pgbouncer (Debian package pgbouncer)"
        unavailable(message)
    folder = Path(tempfile.mkdtemp(prefix="search-deploy-"))
    folder.chmod(0o755)  # PgBouncer refuses to run as root: as nobody, it must read its files
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (folder / "userlist.txt").write_text(userlist)
    (folder / "pgbouncer.ini").write_text(pooler_ini(ini_text, database_url, port, folder / "userlist.txt"))
    for path in folder.iterdir():
        path.chmod(0o644)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen([binary, *user, str(folder / "pgbouncer.ini")], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        assert process.poll() is None, process.stdout.read()
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder)


def pooler_configs() -> dict[str, str]:
    return {"compose": (DEPLOY / "pgbouncer" / "pgbouncer.ini").read_text(),
            "k8s": resource("ConfigMap", "search-pgbouncer")["data"]["pgbouncer.ini"]}


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_the_shipped_pooler_config_serves_the_study_database(where: str, postgres_url: str):
    """PgBouncer starts on the config as shipped (an unknown key or value stops it) and logs in
    only with the userlist's password."""
    user = sqlalchemy.make_url(postgres_url).username
    with pooler(pooler_configs()[where], postgres_url, f'"{user}" "s3cret"\n') as port:
        server = {"host": "127.0.0.1", "port": port, "dbname": "search", "user": user,
                  "prepare_threshold": None}
        with psycopg.connect(**server, password="s3cret", autocommit=True) as conn:
            (database,) = conn.execute("SELECT current_database()").fetchone()
        assert database == sqlalchemy.make_url(postgres_url).database
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(**server, password="wrong")


def test_the_shipped_pooler_secret_lets_nobody_in(postgres_url: str):
    secret = resource("Secret", "search-pgbouncer")["stringData"]["userlist.txt"]
    user = sqlalchemy.make_url(postgres_url).username
    with (pooler(pooler_configs()["k8s"], postgres_url, secret) as port,
          pytest.raises(psycopg.OperationalError, match="authentication failed")):
        psycopg.connect(host="127.0.0.1", port=port, dbname="search", user=user, password="s3cret")


# Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(dockerfile: Path):
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_an_unpinned_base(tmp_path: Path):
    """The check above can fail: the same Dockerfile on ``python:latest`` is refused."""
    broken = tmp_path / "Dockerfile"
    unpinned = re.sub(r"^FROM .*$", "FROM python:latest", DOCKERFILES[0].read_text(), flags=re.MULTILINE)
    broken.write_text(unpinned)
    result = hadolint(broken)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_the_image_runs_the_service_from_the_pinned_requirements():
    text = DOCKERFILES[0].read_text()
    (base,) = re.findall(r"^FROM python:(\d+)\.(\d+)\.\d+-slim", text, re.MULTILINE)
    assert tuple(map(int, base)) == sys.version_info[:2]  # the Python the tests run on
    assert "pip install --no-cache-dir -r requirements.txt" in text
    assert 'ENTRYPOINT ["python", "-m", "search"]' in text
    assert not re.search(r"^(ENV|ARG)\b.*(STORAGE|PASSWORD|SECRET)", text, re.MULTILINE | re.IGNORECASE)
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "storage", "exports", "reports", "deploy/.env", "deploy/secrets"} <= ignored


# Compose


def test_compose_services_and_their_commands(monkeypatch: pytest.MonkeyPatch):
    services = compose()["services"]
    assert set(services) == {"postgres", "pgbouncer", *SEARCH_SERVICES}
    commands = {}
    for name in SEARCH_SERVICES:
        env = {k: interpolate(str(v)) for k, v in services[name]["environment"].items()}
        commands[name] = parse_command(services[name]["command"], env, monkeypatch)
        monkeypatch.undo()
        help_text = command_help(services[name]["command"][0])
        for variable in env:
            assert f"[env {variable}]" in help_text, (name, variable)
    assert (commands["create"].command, commands["create"].trials) == ("search", 1)
    assert commands["worker"].command == "worker" and services["worker"]["deploy"]["replicas"] >= 1
    assert services["worker"]["depends_on"]["create"]["condition"] == "service_completed_successfully"
    assert commands["dashboard"].command == "dashboard" and not commands["dashboard"].allow_writes


def test_compose_workers_use_the_pooler_and_no_secret_is_inline():
    data = compose()
    services = data["services"]
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read(DEPLOY / "pgbouncer" / "pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    for name in SEARCH_SERVICES:
        raw = services[name]["environment"]["SEARCH_STORAGE"]
        url = sqlalchemy.make_url(interpolate(raw))
        assert (url.host, url.port) == ("pgbouncer", int(ini["pgbouncer"]["listen_port"])), name
        assert url.database in ini["databases"]
        assert ":${SEARCH_DB_PASSWORD:?" in raw  # the password only through interpolation
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            if "PASSWORD" in key:
                assert ENV_SUBSTITUTION.fullmatch(str(value)), (name, key)
    secret = Path(ini["pgbouncer"]["auth_file"])
    assert secret.parent == Path("/run/secrets") and secret.name in services["pgbouncer"]["secrets"]
    assert not (DEPLOY / data["secrets"][secret.name]["file"]).exists()  # never committed
    assert (DEPLOY / "pgbouncer" / "pgbouncer.ini").is_file()


def test_compose_publishes_no_database_port_and_the_dashboard_on_loopback_only():
    services = compose()["services"]
    for name, service in services.items():
        if name != "dashboard":
            assert "ports" not in service, name
    assert all(p.startswith("127.0.0.1:") for p in services["dashboard"]["ports"])


def test_compose_stops_workers_after_the_heartbeat_grace():
    worker = compose()["services"]["worker"]
    minutes, seconds = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", worker["stop_grace_period"]).groups()
    assert int(minutes or 0) * 60 + int(seconds or 0) > grace_seconds()


# Slurm


def run_sbatch(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SBATCH)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture
def slurm_env(tmp_path: Path, cifar_dir: Path, sqlite_url: str) -> dict[str, str]:
    """A submission's environment on this machine, with an ``srun`` that notes its arguments and
    runs its command."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text(
        '#!/bin/sh\necho "$@" >> "$SRUN_CALLS"\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n'
    )
    (fake / "srun").chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SRUN_CALLS": str(tmp_path / "srun.calls"),
        "SLURM_CPUS_PER_TASK": "2",
        "VENV": str(Path(sys.executable).parent.parent),
        "SEARCH_STORAGE": sqlite_url,
        "SEARCH_STUDY": "tiny",
        "SEARCH_DATA_DIR": str(cifar_dir),
        "SEARCH_TRIALS": "1",
    }


def image_files(folder: Path) -> Path:
    """What deploy/Dockerfile copies into /app, copied into ``folder`` the same way."""
    for source, target in re.findall(r"^COPY (\S+) (\S+)$", DOCKERFILES[0].read_text(), re.MULTILINE):
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, folder / target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (folder / target).mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, folder / target)
    return folder


def test_slurm_array_tasks_each_run_a_worker_launch(tmp_path: Path, cifar_dir: Path, sqlite_url: str,
                                                    slurm_env: dict[str, str]):
    """The create Job's command, run on the image's files alone, makes the study; then two array
    tasks each join it with a worker launch of their own."""
    app = image_files(tmp_path / "app")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(tmp_path)))
    (create,) = pod_specs()["search-create-study"]["containers"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SEARCH_CONFIG=str(config), SEARCH_STORAGE=sqlite_url, SEARCH_DATA_DIR=str(cifar_dir))
    creator = subprocess.run([sys.executable, "-m", "search", *create["args"]], cwd=app, env=env,
                             capture_output=True, text=True, timeout=600, check=False)
    assert creator.returncode == 0, creator.stdout + creator.stderr
    for task in ("0", "1"):
        result = run_sbatch({**slurm_env, "SLURM_ARRAY_TASK_ID": task}, REPO)
        log = tmp_path / "logs" / f"worker-4242_{task}.log"
        assert result.returncode == 0, result.stderr + (log.read_text() if log.exists() else "")
        assert f"array task {task} " in result.stdout and str(log.relative_to(tmp_path)) in result.stdout
    calls = (tmp_path / "srun.calls").read_text().splitlines()
    assert len(calls) == 2 and all(c.startswith("--ntasks=1 --cpus-per-task=2 ") for c in calls)
    assert all(c.endswith(f"{sys.executable} -m search worker") for c in calls)
    trials = optuna.load_study(study_name="tiny", storage=sqlite_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    launches = [t.user_attrs["launch"] for t in trials]
    assert len(set(launches)) == 3  # the creator's and each task's: distinct launches
    for task, trial in zip("01", trials[1:]):
        log = (tmp_path / "logs" / f"worker-4242_{task}.log").read_text()
        assert f"launch seed {trial.user_attrs['launch']}" in log


@pytest.mark.parametrize(("setting", "value", "said"), [
    ("SLURM_ARRAY_TASK_ID", None, "not a Slurm array task"),
    ("SLURM_ARRAY_TASK_ID", "../../x", "not a Slurm array task (SLURM_ARRAY_TASK_ID '../../x')"),
    ("SEARCH_STORAGE", None, "SEARCH_STORAGE is not set"),
])
def test_slurm_script_refuses_without_its_settings(tmp_path: Path, slurm_env: dict[str, str], setting: str,
                                                   value: str | None, said: str):
    env = {**slurm_env, "SLURM_ARRAY_TASK_ID": "0", setting: value}
    if value is None:
        del env[setting]
    result = run_sbatch(env, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and said in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing written
