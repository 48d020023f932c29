"""``report``: an HTML page per study (the top trials, Optuna's plots, the validation curves),
opening from disk with no network: the pages share one copy of plotly.js beside them.

A search's page names one best (by search until ``make confirm``, then by confirmed mean) and
lists the search's own ranking as such; a confirmation study's page is its table of
configurations with their runs, mean ± std and gain, and the curves: no best trial, no
importances over seeds.
"""

from __future__ import annotations

import html
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import optuna
import optuna.visualization as vis
from optuna.trial import TrialState

from search.base.config import PARAMS, shown_params, trial_label
from search.base.errors import UsageError
from search.base.files import folder_in, write_bytes, write_text
from search.base.names import CONFIRMS, inside
from search.base.paths import REPORTS
from search.base.stats import describe_spread
from search.tuning.artifacts import TRAINED, study_curves
from search.tuning.compare import (
    CONFIRMATION_HEAD,
    SEARCH_BEST,
    SEARCH_RANKING,
    baseline_trial,
    best_by_value,
    confirmation_rows,
    confirmations,
    confirmed_first,
    load_confirmations,
    outcome_lines,
    trial_entry,
)
from search.tuning.storage import StorageOpener, StudyStorage

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
    with warnings.catch_warnings():  # l1 and l2 exist only when on: their regimes can be small
        warnings.filterwarnings("ignore", "Some regimes for parameter", UserWarning)
        return vis.plot_param_importances(study, target_name=METRIC)


CURVES = "Validation accuracy per epoch (hover for a trial's parameters)"
PLOTS: dict[str, Callable[[optuna.Study], Figure | str]] = {
    "Optimization history (best by search: one run each)": lambda s: vis.plot_optimization_history(
        s, target_name=METRIC
    ),
    "Hyperparameter importances": _importances,
    "Parallel coordinates": lambda s: vis.plot_parallel_coordinate(s, target_name=METRIC),
    "Slices: l1, l2 and dropout (l1_on, l2_on: whether the penalty is on)": lambda s: vis.plot_slice(
        s, target_name=METRIC
    ),
    CURVES: lambda s: study_curves(s.get_trials(deepcopy=False, states=TRAINED)),
}
CONFIRMATION_PLOTS = {CURVES: PLOTS[CURVES]}  # repeated runs: no history, importances or slices


def _cells(tag: str, row: list[object]) -> str:
    return "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in row)


def _shown(name: str, value: float | None) -> str:
    if value is None:
        return ""
    return "off" if value == 0 and name != "dropout" else f"{value:.3g}"


def _html_table(head: list[str] | tuple[str, ...], rows: list[list[object]]) -> str:
    body = "".join(f"<tr>{_cells('td', row)}</tr>" for row in rows)
    return f"<table><tr>{_cells('th', head)}</tr>{body}</table>"


def _table(study: optuna.Study, top: int) -> str:
    """The search's own ranking, one run each; the baseline's row labelled."""
    trials = best_by_value(study, top)
    if not trials:
        return '<p class="note">No complete trial yet.</p>'
    head = ["rank", "trial", METRIC, "best epoch", "epochs run", *PARAMS]
    rows = []
    for i, t in enumerate(trials, 1):
        e = trial_entry(t)
        rows.append([i, trial_label(t), f"{e['value']:.4f}", e["best_epoch"], e["epochs_run"]]
                    + [_shown(p, e["params"].get(p)) for p in PARAMS])
    return _html_table(head, rows)


def _confirmations(study: optuna.Study) -> str:
    """A confirmation study's table: each configuration with its runs, mean ± std and gain."""
    rows = confirmation_rows(confirmations(study))
    if not rows:
        return '<p class="note">No complete confirmation run yet.</p>'
    return _html_table(CONFIRMATION_HEAD, rows)


def _versus_baseline(study: optuna.Study, storage: StudyStorage) -> str:
    """Baseline and best side by side, with their confirmed figures once ``make confirm`` ran."""
    runs = load_confirmations(storage, study.study_name)
    confirmed = {r.source_trial: r for r in runs if r.source_trial is not None}
    best = next(iter(confirmed_first(study, runs)), None)
    best_label = "best (confirmed)" if best is not None and best.number in confirmed else SEARCH_BEST
    rows = []
    for label, trial in (("baseline", baseline_trial(study)), (best_label, best)):
        if trial is not None:
            mine = confirmed.get(trial.number)
            rows.append([label, trial_label(trial), "" if trial.value is None else f"{trial.value:.4f}",
                         shown_params(trial), describe_spread(mine.values) if mine else "unconfirmed"])
    head = ["", "trial", f"{METRIC}, search (one run)", "l1, l2, dropout", f"{METRIC}, confirmed"]
    lines = html.escape("\n".join(outcome_lines(study, storage)))
    return f"<h2>Baseline vs best</h2>{_html_table(head, rows)}<pre>{lines}</pre>"


def render(study: optuna.Study, storage: StudyStorage, top: int = 10) -> str:
    """The page for one study: a summary, the top trials, then each plot under its heading."""
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials"
    confirms = study.user_attrs.get(CONFIRMS)
    if isinstance(confirms, str):  # repeated runs of fixed configurations, not a search
        lines = html.escape("\n".join(outcome_lines(study, storage)))
        intro = (f"Confirmation runs of study {html.escape(confirms)}: its top trials and its baseline "
                 "trained again with fresh seeds, all epochs. There is no best trial here: each "
                 "configuration's figure is the mean of its runs.")
        sections = [f'<p class="note">{intro}</p><h2>Configurations</h2>{_confirmations(study)}'
                    f"<pre>{lines}</pre>"]
        plots = CONFIRMATION_PLOTS
    else:
        sections = [_versus_baseline(study, storage),
                    f"<h2>{SEARCH_RANKING[0].upper()}{SEARCH_RANKING[1:]}</h2>{_table(study, top)}"]
        plots = PLOTS
    plots = plots if best_by_value(study, 1) else {}  # the table says there is nothing to plot
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
    if path.is_symlink() or not path.is_file() or path.read_bytes() != script:
        write_bytes(path, script)  # whole: a page never meets half a script


def write_reports(
    opener: StorageOpener, study_name: str | None = None, top: int = 10, root: Path = REPORTS
) -> list[Path]:
    """Write ``<root>/<study>.html`` for ``study_name``, or for every study in the storage.

    A stored study whose name is no file name (others write the storage) is skipped with a
    warning on stderr.
    """
    if study_name:
        inside(root, study_name, ".html")
    storage = opener.open(read_only=True)
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
        write_plotlyjs(folder_in(root))
        for name, study in studies.items():
            write_text(targets[name], render(study, storage, top))
    except OSError as exc:
        raise UsageError(f"REPORTS {root}: cannot write ({exc.strerror or exc})") from None
    return list(targets.values())
