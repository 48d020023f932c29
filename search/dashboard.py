"""optuna-dashboard on the study storage, with the trials' artifacts and a note on each study."""

from __future__ import annotations

import optuna
import yaml

from search.config import StudyConfig
from search.errors import UsageError


def study_note(config: StudyConfig, packages: dict[str, str]) -> str:
    """The study's note (Markdown): the config it was started from, its data split, the packages."""
    data = config.data
    versions = ", ".join(f"{name} {v}" for name, v in packages.items())
    return (
        f"## {config.study_name}\n\n"
        f"**Data split**: {data.train_size:,} training / {data.val_size:,} validation images, "
        f"stratified from the 50,000 CIFAR-10 training images (split_seed {data.split_seed}); "
        "the test batch is not read by the search.\n\n"
        f"**Packages**: {versions}\n\n"
        "**Config** the study was started from:\n\n"
        f"```yaml\n{yaml.safe_dump(config.model_dump(mode='json'), sort_keys=False)}```\n"
    )


def save_study_note(study: optuna.Study, config: StudyConfig) -> None:
    """Write the study's note from its config and the package versions recorded on it."""
    from optuna_dashboard import save_note

    save_note(study, study_note(config, study.user_attrs.get("packages", {})))


def serve(storage_url: str | None, artifacts: str, host: str, port: int) -> int:
    """Run optuna-dashboard until interrupted; print its address first."""
    from optuna_dashboard import run_server

    from search.storage import artifact_store, open_storage

    if not 1 <= port <= 65535:
        raise UsageError(f"PORT {port}: not a TCP port (1-65535)")
    storage = open_storage(storage_url, read_only=True)
    print(
        f"optuna-dashboard at http://{host}:{port}/dashboard "
        f"(storage {storage.masked}, artifacts {artifacts}); Ctrl-C stops it",
        flush=True,
    )
    try:
        run_server(storage.rdb, host=host, port=port, artifact_store=artifact_store(artifacts))
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port} ({exc.strerror or exc})") from None
    return 0
