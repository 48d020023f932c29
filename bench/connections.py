"""``python -m bench.connections``: the server connections a command holds, by number of workers,
on PostgreSQL directly and through PgBouncer (docs/fleet.md).

Each command runs 2 trials per worker on tiny synthetic data in a fresh database on the local
server (``SEARCH_TEST_POSTGRES``); ``pg_stat_activity`` is sampled every 20 ms meanwhile.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy
import yaml

from search.testing import POSTGRES_ADMIN, REPO, make_cifar_folder, pgbouncer, server_database, tiny_raw


def held(url: str, database: str, command: list[str]) -> tuple[int, int]:
    """The most and the median server connections to ``database`` while ``command`` ran."""
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN, poolclass=sqlalchemy.NullPool)
    query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")
    process = subprocess.Popen([sys.executable, "-m", "search", *command, "--storage", url], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []
    with admin.connect() as connection:
        while process.poll() is None:
            samples.append(connection.execute(query, {"d": database}).scalar_one())
            time.sleep(0.02)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().strip().splitlines()[-1:]}")
    admin.dispose()
    return max(samples), int(statistics.median(samples))


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-connections-"))
    data = make_cifar_folder(folder / "cifar-10-batches-py")
    raw = tiny_raw(folder, data={"train_size": 100, "val_size": 50}, training={"epochs": 2, "batch_size": 50})
    (folder / "study.yaml").write_text(yaml.safe_dump(raw))
    print("| via | command | workers | server connections, most | median |\n|---|---|---|---|---|")
    for via in ("PostgreSQL", "PgBouncer"):
        for workers in (1, 4):
            with server_database(POSTGRES_ADMIN) as direct:
                database = sqlalchemy.make_url(direct).database
                runs = {"search": ["search", "--config", str(folder / "study.yaml")], "worker": ["worker"]}
                for name, command in runs.items():
                    command = [*command, "--data-dir", str(data), "--trials", str(2 * workers),
                               "--workers", str(workers)]
                    if via == "PgBouncer":
                        with pgbouncer(direct) as url:
                            most, median = held(url, database, command)
                    else:
                        most, median = held(direct, database, command)
                    print(f"| {via} | {name} | {workers} | {most} | {median} |", flush=True)


if __name__ == "__main__":
    main()
