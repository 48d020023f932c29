"""Helpers shared by the bench sections: medians with spreads, RSS, configs, data."""

from __future__ import annotations

import statistics
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy
import yaml

from search.base.config import StudyConfig, parse_config
from search.testing import POSTGRES_ADMIN, REPO, make_cifar_folder, server_database

__all__ = ["REPO", "bench_config", "median_range", "postgres_url", "proc_status", "synthetic_folder"]


def median_range(values: list[float], digits: int = 3) -> dict[str, Any]:
    """Median, min and max of repeated runs."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": len(values),
    }


def proc_status(*keys: str) -> dict[str, float]:
    """Fields of /proc/self/status in MiB (VmRSS: now, VmHWM: peak)."""
    lines = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in keys}


def bench_config(tmp: Path, name: str, data: dict, epochs: int, **overrides: Any) -> StudyConfig:
    """study_configs/cifar10.yaml with a smaller split and fewer epochs; artifacts under ``tmp``."""
    raw = yaml.safe_load((REPO / "study_configs" / "cifar10.yaml").read_text())
    raw.update(
        study_name=name,
        data={**raw["data"], **data},
        training={**raw["training"], "epochs": epochs},
        storage={**raw["storage"], "artifacts": str(tmp / "artifacts")},
        **overrides,
    )
    return parse_config(raw, f"bench config {name}")


def synthetic_folder(folder: Path) -> Path:
    """A cifar-10-batches-py folder of the real shape (50,000 + 10,000 images), synthetic pixels."""
    return make_cifar_folder(folder / "cifar-10-batches-py", per_batch=10_000)


@contextmanager
def postgres_url() -> Iterator[str | None]:
    """A fresh database on the local PostgreSQL server, dropped afterwards; None if none answers."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(server_database(POSTGRES_ADMIN))
        except sqlalchemy.exc.OperationalError:
            url = None
        yield url
