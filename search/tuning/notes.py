"""The study's note (Markdown, shown by optuna-dashboard): its baseline, what it found, its config."""

from __future__ import annotations

import optuna
import yaml

from search.base.config import StudyConfig
from search.base.names import CONFIRMS
from search.tuning.compare import CONFIRMATION_HEAD, confirmation_rows, confirmations, outcome_lines
from search.tuning.storage import StudyStorage


def markdown_table(head: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    """A Markdown table (``|`` in a cell escaped)."""
    lines = [head, ["---"] * len(head), *rows]
    return "".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |\n" for line in lines)


def study_note(
    config: StudyConfig,
    packages: dict[str, str],
    results: list[str] = (),
    confirms: str | None = None,
    table: str = "",
) -> str:
    """The study's note (Markdown): the baseline and what the study found against it (``results``),
    the config it was started from, its data split, the packages. ``confirms``: the study whose
    confirmation runs this study holds, ``table`` those runs by configuration."""
    data = config.data
    versions = ", ".join(f"{name} {v}" for name, v in packages.items())
    if confirms is not None:
        baseline = (f"this study holds the confirmation runs of `{confirms}`: its top trials and its "
                    "baseline trained again with fresh seeds, all epochs (user attrs `source_trial`, "
                    "`seed_index`, `seed`, `baseline`). It is no search: there is no best trial here, "
                    "each configuration's figure is the mean of its runs.\n\n"
                    f"{table or 'No complete confirmation run yet.'}")
    elif config.baseline is None:
        baseline = "none (`baseline: null`)"
    else:
        point = ", ".join(f"{k} {v:g}" for k, v in config.baseline.model_dump().items())
        baseline = (f"{point}, the first trial (user attr `baseline: true`; l1/l2 0 means off, "
                    "stored as `l1_on: false`)")
    found = "".join(f"    {line}\n" for line in results)  # a code block: keeps the columns
    results_part = f"**Results** (updated by each search and confirm):\n\n{found}\n" if found else ""
    return (
        f"## {config.study_name}\n\n"
        f"**Baseline**: {baseline}\n\n"
        f"{results_part}"
        f"**Data split**: {data.train_size:,} training / {data.val_size:,} validation images, "
        f"stratified from the 50,000 CIFAR-10 training images (split_seed {data.split_seed}); "
        "the test batch is not read by the search.\n\n"
        f"**Packages**: {versions}\n\n"
        "**Config** the study was started from:\n\n"
        f"```yaml\n{yaml.safe_dump(config.model_dump(mode='json'), sort_keys=False)}```\n"
    )


def save_study_note(study: optuna.Study, config: StudyConfig, storage: StudyStorage | None = None) -> None:
    """Write the study's note from its config, the package versions recorded on it, and what it
    found against its baseline (with its confirmations, given the storage)."""
    from optuna_dashboard import save_note

    confirms = study.user_attrs.get(CONFIRMS)
    confirms = confirms if isinstance(confirms, str) else None
    rows = confirmation_rows(confirmations(study)) if confirms else []
    note = study_note(config, study.user_attrs.get("packages", {}), outcome_lines(study, storage),
                      confirms, markdown_table(CONFIRMATION_HEAD, rows) if rows else "")
    save_note(study, note)
