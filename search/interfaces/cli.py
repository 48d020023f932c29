"""The command line: ``python -m search {search,worker,...}``; errors are one line, with exit
code 2 (bad input), 3 (storage failed) or 4 (trials kept failing).

Every option that takes a value can also come from the environment, ``SEARCH_<OPTION>``
(``SEARCH_STORAGE``, ``SEARCH_DATA_DIR``, ...), which the flag overrides: how ``make`` passes
them, so that no password shows in ``ps`` or on the screen and no quote reaches a shell.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING

from search.base.arguments import Parser, bounded, integer, positive
from search.base.errors import SearchError, UsageError, stop_on_signals, stopped, stops_told_once
from search.base.names import check_name
from search.learning.quiet import set_verbosity, verbose

if TYPE_CHECKING:
    from search.base.config import StudyConfig
    from search.running.runner import SearchRequest
    from search.tuning.storage import StorageOpener

DEFAULT_CONFIG = "study_configs/cifar10.yaml"
DEFAULT_URL = "sqlite:///storage/optuna.db"  # search.tuning.storage.DEFAULT_URL, which loads Optuna


def plain(text: str) -> str:
    """A docstring for ``--help``: without reStructuredText's double backticks."""
    return text.replace("``", "")


# Every number has a bound that keeps the program working (a shared counter, a port, a seed),
# checked up front.
MAX_WORKERS = 1024
MAX_SEEDS = 100  # runs of each configuration, for confirm and retrain
MAX_TOP = 10_000
MAX_PORT = 65_535
MAX_LAUNCH_SEED = 2**32 - 1  # what launch_seed draws
MAX_MINUTES = 525_600.0  # a year

_seed = bounded(0, MAX_LAUNCH_SEED)
_seeds = bounded(1, MAX_SEEDS)
_top = bounded(1, MAX_TOP)
_port = bounded(0, MAX_PORT)  # 0: any free port


def _total(text: str) -> int:
    from search.tuning.total import TOTAL_MAX

    return integer(text, 1, TOTAL_MAX)


def _name(text: str) -> str:
    try:
        return check_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(text: str) -> int | None:
    """``auto`` (None: the layout ``search.running.layout`` plans) or a number of workers."""
    if text.strip().lower() == "auto":
        return None
    try:
        return integer(text, 1, MAX_WORKERS)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (use auto or a number of workers)") from None


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    if value > MAX_MINUTES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_MINUTES:g} minutes (a year), got {text}")
    return value


def _from_environment(parser: argparse.ArgumentParser) -> None:
    """Options that take one value default to ``SEARCH_<OPTION>`` when it is set and not empty."""
    for action in parser._actions:
        if action.option_strings and action.nargs is None and not isinstance(action.default, list):
            variable = f"SEARCH_{action.dest.upper()}"
            action.help = f"{action.help} [env {variable}]"
            if os.environ.get(variable):
                action.default = os.environ[variable]  # argparse applies the type to it


STORAGE_HELP = f"SQLAlchemy URL (default {DEFAULT_URL})"
PICKED = "the config's study_name with --config, else the only or most recent study in STORAGE"
WORKERS_HELP = ("worker processes; auto: one per core (single-thread) or per GPU, at most one per "
                "trial and what memory holds (default auto)")


def _verbose(p: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="show TensorFlow's native start-up log lines (default: hidden)")


def _study_args(p: argparse.ArgumentParser, config: str, study: str) -> None:
    p.add_argument("--config", help=f"{config}")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--study", type=_name, help=f"study name (default: {study})")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=positive,
                   help="trials this command runs at most (default 20; with --total, up to it)")
    p.add_argument("--total", type=_total, metavar="N",
                   help="start no trial once the study holds N search trials, from any command or "
                        "host; the baseline and retries of lost trials aside (default: no limit)")
    p.add_argument("--workers", type=_workers, default=None, metavar="auto|N", help=WORKERS_HELP)
    p.add_argument("--timeout", type=_minutes, metavar="MINUTES",
                   help="start no trial after this many minutes; running ones finish (default: none)")
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")
    p.add_argument("--launch-seed", type=_seed, metavar="N",
                   help="sample as the launch with this seed did (default: a fresh seed each run)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m search", description=plain(__doc__))
    _verbose(parser, default=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = commands.add_parser("search", help="create or resume a study and run trials")
    _study_args(p, f"study config (YAML; default {DEFAULT_CONFIG})", "the config's study_name")
    p.set_defaults(config=DEFAULT_CONFIG)
    _run_args(p)

    p = commands.add_parser("worker", help="join an existing study, using the config stored on it")
    _study_args(p, "a study config: names the study, checked against the stored one "
                   "(default: the config stored on the study)", PICKED)
    _run_args(p)

    p = commands.add_parser("dashboard", help="serve optuna-dashboard on the storage and artifacts")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"config naming the artifact store (default {DEFAULT_CONFIG})")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--artifacts", help="artifact folder (default: the config's storage.artifacts)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0: any free port)")
    p.add_argument(
        "--allow-writes",
        action="store_true",
        help="let anyone who opens it delete, rename and tell studies, edit notes and upload "
        "artifacts (default: read-only, every change refused)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host name (or NAME:PORT) to answer to, e.g. behind a proxy; repeatable "
        "(default: only the bound address and, off loopback, this machine's name)",
    )

    p = commands.add_parser("export", help="write the best trial's settings to exports/<study>/")
    _study_args(p, "a study config: names the study (default: none)", PICKED)
    p.add_argument("--top", type=_top, default=1,
                   help="also write the k best to top.yaml when above 1 (default 1)")

    p = commands.add_parser("confirm", help="retrain the top trials and the baseline with fresh seeds")
    _study_args(p, "a study config: names the study (default: none)", PICKED)
    p.add_argument("--top", type=_top, default=3,
                   help="best trials to confirm, besides the baseline (default 3)")
    p.add_argument("--seeds", type=_seeds, default=3, help="runs of each, with fresh seeds (default 3)")
    p.add_argument("--workers", type=_workers, default=None, metavar="auto|N", help=WORKERS_HELP)
    p.add_argument("--runs", type=positive, help="run at most this many now (default: all missing)")
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")

    p = commands.add_parser("retrain", help="train an exported trial's model and test it once")
    _study_args(p, "an export file (best.yaml), or a study config: its study's export "
                   "(default: exports/<study>/best.yaml)", PICKED)
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")
    p.add_argument("--full", action="store_true",
                   help="train on all 50,000 training images (default: the study's training split)")
    p.add_argument("--seeds", type=_seeds, default=1,
                   help="trainings of each config, the first with its trial's seed (default 1)")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not train the baseline too (default: train it)")

    p = commands.add_parser("report", help="write reports/<study>.html with the study's plots")
    _study_args(p, "a study config: names the study (default: none)",
                "the config's study_name with --config, else every study in STORAGE")
    p.add_argument("--top", type=_top, default=10, help="top trials to list (default 10)")
    for sub in commands.choices.values():
        _verbose(sub)
        _from_environment(sub)
    return parser


def _study_name(args: argparse.Namespace, opener: StorageOpener, command: str) -> str:
    """STUDY, else the study CONFIG names, else the only or most recent one (said in one line)."""
    from search.base.config import load_config
    from search.tuning.pick import pick_study

    name = args.study or (load_config(args.config).study_name if args.config else None)
    name, note = pick_study(opener.open(read_only=True), name, command)
    if note:
        print(note, flush=True)
    return name


def _request(
    args: argparse.Namespace, opener: StorageOpener, config: StudyConfig, name: str | None
) -> SearchRequest:
    """The search that ``search`` and ``worker`` ask for; TRIALS, else TOTAL (the study's own
    limit), else 20 trials at most."""
    from search.running.runner import SearchRequest

    return SearchRequest(config, args.trials or args.total or 20, opener, args.workers, name, args.data_dir,
                         args.timeout, args.launch_seed, args.total)


def _search(args: argparse.Namespace, opener: StorageOpener) -> int:
    from search.base.config import load_config
    from search.running.runner import run_search

    return run_search(_request(args, opener, load_config(args.config), args.study))


def _worker(args: argparse.Namespace, opener: StorageOpener) -> int:
    from search.base.config import load_config
    from search.running.runner import run_search
    from search.tuning.study import stored_config

    name = _study_name(args, opener, "worker")
    config = load_config(args.config) if args.config else stored_config(opener.open(read_only=True), name)
    return run_search(_request(args, opener, config, name))


def _dashboard(args: argparse.Namespace, opener: StorageOpener) -> int:
    from search.base.config import load_config
    from search.interfaces.dashboard import serve

    artifacts = args.artifacts or load_config(args.config).storage.artifacts
    return serve(opener, artifacts, args.host, args.port, args.allow_writes, args.allowed_host)


def _export(args: argparse.Namespace, opener: StorageOpener) -> int:
    from search.results.export import export

    name = _study_name(args, opener, "export")
    for path in export(opener, name, args.top):
        print(f"wrote {path}")
    return 0


def _confirm(args: argparse.Namespace, opener: StorageOpener) -> int:
    from search.results.confirm import confirm

    name = _study_name(args, opener, "confirm")
    return confirm(opener, name, args.top, args.seeds, args.workers, args.data_dir, args.runs)


def _retrain(args: argparse.Namespace, opener: StorageOpener) -> int:
    from search.learning.quiet import import_tensorflow
    from search.results.retrain import describe_metrics, resolve_export, retrain

    if args.config or args.study:
        path = resolve_export(args.config, args.study)
    else:
        path = resolve_export(None, _study_name(args, opener, "retrain"))
    import_tensorflow()
    metrics = retrain(path, args.data_dir, args.full, args.seeds, baseline=not args.no_baseline)
    print(describe_metrics(metrics))
    return 0


def _report(args: argparse.Namespace, opener: StorageOpener) -> int:
    import optuna

    from search.results.report import write_reports

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the plots' warnings repeat the page
    name = _study_name(args, opener, "report") if args.study or args.config else None  # else every study
    for path in write_reports(opener, name, args.top):
        print(f"wrote {path}")
    return 0


COMMANDS = {
    "search": _search,
    "worker": _worker,
    "dashboard": _dashboard,
    "export": _export,
    "confirm": _confirm,
    "retrain": _retrain,
    "report": _report,
}

# Commands that may write to the storage (the dashboard when --allow-writes).
WRITERS = {"search", "worker", "confirm", "dashboard"}


def quiet_optuna() -> None:
    """Optuna's INFO lines (``A new study created in RDB ...``) off: the commands say what they
    did in their own lines; warnings stay, and everything shows with ``-v``."""
    import optuna

    if not verbose():
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    set_verbosity(args.verbose)  # before anything loads TensorFlow
    quiet_optuna()
    from search.tuning.storage import StorageOpener, checkpoint

    opener = StorageOpener(getattr(args, "storage", None))  # opened once, by the first step that needs it
    try:
        return COMMANDS[args.command](args, opener)
    except SearchError as exc:  # UsageError 2, StorageUnavailable 3, TrialsFailing 4
        if stopped():  # what a stop turned into on its way out
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if args.command in WRITERS and opener.opened:
            checkpoint(opener.url)  # the file alone is the whole database


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (see the module's docstring and the README)."""
    stop_on_signals()  # Ctrl-C or SIGTERM at any moment: one line, exit code 130
    try:
        with stops_told_once():
            code = _run(argv)
    except BaseException:
        if stopped() is None:
            raise
        code = 0
    if stop := stopped():  # also one that a library caught and went on
        print(stop, file=sys.stderr)
        return stop.exit_code
    return code
