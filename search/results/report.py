"""``report``: an HTML page per study (the top trials, Optuna's plots, the validation curves),
opening from disk with no network: the pages share one copy of plotly.js beside them."""

from __future__ import annotations

import html
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import optuna
import optuna.visualization as vis
from optuna.trial import TrialState

from search.base.config import PARAMS, shown_params
from search.base.errors import UsageError
from search.base.names import CONFIRMS, inside
from search.base.paths import REPORTS
from search.base.stats import describe_spread
from search.tuning.artifacts import TRAINED, study_curves
from search.tuning.compare import (
    baseline_trial,
    best_by_value,
    confirmed_first,
    load_confirmations,
    outcome_lines,
    trial_entry,
)
from search.tuning.storage import StudyStorage, open_storage

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

PLOTLY_JS = "plotly.min.js"  # written once beside the pages, referenced relatively
METRIC = "val_accuracy"
MIN_TRIALS_FOR_IMPORTANCES = 5  # fewer complete trials rank the parameters by noise

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; } td, th { padding: .25em .8em; border-bottom: 1px solid #ddd; }
td { text-align: right; font-variant-numeric: tabular-nums; } .note { color: #666; }
h2 { margin: 1.2em 0 .3em; }
"""
LAYOUT = {"title_text": None, "height": 420, "margin": {"l": 60, "r": 20, "t": 30, "b": 50}}


def _importances(study: optuna.Study) -> Figure | str:
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete < MIN_TRIALS_FOR_IMPORTANCES:
        return (
            "Not enough complete trials to rank the hyperparameters "
            f"({complete}; importances need at least {MIN_TRIALS_FOR_IMPORTANCES})."
        )
    return vis.plot_param_importances(study, target_name=METRIC)


PLOTS: dict[str, Callable[[optuna.Study], Figure | str]] = {
    "Optimization history": lambda s: vis.plot_optimization_history(s, target_name=METRIC),
    "Hyperparameter importances": _importances,
    "Parallel coordinates": lambda s: vis.plot_parallel_coordinate(
        s, params=list(PARAMS), target_name=METRIC
    ),
    "Slices: l1, l2 and dropout": lambda s: vis.plot_slice(
        s, params=list(PARAMS), target_name=METRIC
    ),
    "Validation accuracy per epoch (hover for a trial's parameters)": lambda s: study_curves(
        s.get_trials(deepcopy=False, states=TRAINED)
    ),
}


def _cells(tag: str, row: list[object]) -> str:
    return "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in row)


def _table(study: optuna.Study, top: int) -> str:
    entries = [trial_entry(t) for t in best_by_value(study, top)]
    if not entries:
        return '<p class="note">No complete trial yet.</p>'
    head = ["rank", "trial", METRIC, "best epoch", "epochs run", *PARAMS]
    rows = [
        [i, e["trial"], f"{e['value']:.4f}", e["best_epoch"], e["epochs_run"]]
        + [f"{e['params'].get(p, float('nan')):.3g}" for p in PARAMS]
        for i, e in enumerate(entries, 1)
    ]
    body = "".join(f"<tr>{_cells('td', row)}</tr>" for row in rows)
    return f"<table><tr>{_cells('th', head)}</tr>{body}</table>"


def _versus_baseline(study: optuna.Study, storage: StudyStorage) -> str:
    """Baseline and best side by side, with their confirmed figures once ``make confirm`` ran."""
    if CONFIRMS in study.user_attrs:  # a study of confirmation runs: its table is the runs
        return ""
    runs = load_confirmations(storage, study.study_name)
    confirmed = {r.source_trial: r for r in runs if r.source_trial is not None}
    best = next(iter(confirmed_first(study, runs)), None)
    rows = []
    for label, trial in (("baseline", baseline_trial(study)), ("best", best)):
        if trial is not None:
            mine = confirmed.get(trial.number)
            rows.append([label, trial.number, "" if trial.value is None else f"{trial.value:.4f}",
                         shown_params(trial), describe_spread(mine.values) if mine else "unconfirmed"])
    head = ["", "trial", f"{METRIC}, search", "l1, l2, dropout", f"{METRIC}, confirmed"]
    body = "".join(f"<tr>{_cells('td', row)}</tr>" for row in rows)
    lines = html.escape("\n".join(outcome_lines(study, storage)))
    return f"<h2>Baseline vs best</h2><table><tr>{_cells('th', head)}</tr>{body}</table><pre>{lines}</pre>"


def render(study: optuna.Study, storage: StudyStorage, top: int = 10) -> str:
    """The page for one study: a summary, the top trials, then each plot under its heading."""
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials"
    sections = [_versus_baseline(study, storage), f"<h2>Top trials</h2>{_table(study, top)}"]
    plots = PLOTS if best_by_value(study, 1) else {}  # the table says there is nothing to plot
    for title, plot in plots.items():
        figure = plot(study)
        body = (
            f'<p class="note">{html.escape(figure)}</p>'
            if isinstance(figure, str)
            else figure.update_layout(LAYOUT).to_html(full_html=False, include_plotlyjs=False)
        )
        sections.append(f"<h2>{html.escape(title)}</h2>{body}")
    name = html.escape(study.study_name)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{name}: search report</title>'
        f'<style>{STYLE}</style><script src="{PLOTLY_JS}"></script></head><body>'
        f"<h1>Study {name}</h1><p>{len(study.trials)} trials ({summary}); storage "
        f"{html.escape(storage.masked)}</p>{''.join(sections)}</body></html>\n"
    )


def write_plotlyjs(root: Path) -> None:
    """``<root>/plotly.min.js``, the installed plotly's, unless that very file is there already."""
    from plotly.offline import get_plotlyjs

    script, path = get_plotlyjs().encode(), root / PLOTLY_JS
    if not path.is_file() or path.read_bytes() != script:
        partial = path.with_name(f".{PLOTLY_JS}.{os.getpid()}")
        try:
            partial.write_bytes(script)
            partial.replace(path)  # atomic: a page never meets half a script
        finally:
            partial.unlink(missing_ok=True)


def write_reports(
    storage_url: str | None, study_name: str | None = None, top: int = 10, root: Path = REPORTS
) -> list[Path]:
    """Write ``<root>/<study>.html`` for ``study_name``, or for every study in the storage.

    A stored study whose name is no file name (others write the storage) is skipped with a
    warning on stderr.
    """
    if study_name:
        inside(root, study_name, ".html")
    storage = open_storage(storage_url, read_only=True)
    names = [study_name] if study_name else optuna.get_all_study_names(storage.rdb)
    if not names:
        raise UsageError(f"STORAGE {storage.masked}: no studies to report on")
    targets = {}
    for name in names:
        try:
            targets[name] = inside(root, name, ".html")
        except UsageError as exc:
            print(f"warning: report: skipping {exc}", file=sys.stderr)
    studies = {name: storage.load(name) for name in targets}
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_plotlyjs(root)
        for name, study in studies.items():
            targets[name].write_text(render(study, storage, top), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"REPORTS {root}: cannot write ({exc.strerror or exc})") from None
    return list(targets.values())
