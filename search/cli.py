"""The command line: ``python -m search {search,worker,...}``; bad input exits 2 in one line.

Every option that takes a value can also come from the environment, ``SEARCH_<OPTION>``
(``SEARCH_STORAGE``, ``SEARCH_DATA_DIR``, ...), which the flag overrides: how ``make`` passes
them, so that no password shows in ``ps`` or on the screen and no quote reaches a shell.
"""

from __future__ import annotations

import argparse
import os
import sys

from search.errors import UsageError
from search.names import check_name

DEFAULT_CONFIG = "study_configs/cifar10.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _study_name(text: str) -> str:
    try:
        return check_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _from_environment(parser: argparse.ArgumentParser) -> None:
    """Options that take one value default to ``SEARCH_<OPTION>`` when it is set and not empty."""
    for action in parser._actions:
        if action.option_strings and action.nargs is None and not isinstance(action.default, list):
            variable = f"SEARCH_{action.dest.upper()}"
            action.help = f"{action.help} [env {variable}]"
            if os.environ.get(variable):
                action.default = os.environ[variable]  # argparse applies the type to it


def _workers(text: str) -> int | None:
    """``auto`` (None: the layout ``search.layout`` plans) or a number of workers."""
    if text.strip().lower() == "auto":
        return None
    try:
        return _positive(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (use auto or a number of workers)") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///storage/optuna.db)")
    p.add_argument("--study", type=_study_name, help="study name (default: the config's one)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=_positive, default=20, help="trials to run in all (default 20)")
    p.add_argument("--workers", type=_workers, default=None, metavar="auto|N",
                   help="worker processes; auto: one per core (single-thread) or per GPU, at most "
                   "one per trial and what memory holds (default auto)")
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m search", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("search", help="create or resume a study and run trials")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="study config (YAML)")
    _common(p)
    _run_args(p)

    p = commands.add_parser("worker", help="join an existing study, using the config stored on it")
    _common(p)
    _run_args(p)

    p = commands.add_parser("dashboard", help="serve optuna-dashboard on the storage and artifacts")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config naming the artifact store")
    p.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///storage/optuna.db)")
    p.add_argument("--artifacts", help="artifact folder (default: the config's storage.artifacts)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_positive, default=8080, help="port (default 8080)")
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
    p.add_argument("--config", default=DEFAULT_CONFIG, help="study config naming the study")
    _common(p)
    p.add_argument("--top", type=_positive, default=1, help="also write the k best to top.yaml")

    p = commands.add_parser("confirm", help="retrain the top trials and the baseline with fresh seeds")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="study config naming the study")
    _common(p)
    p.add_argument("--top", type=_positive, default=3,
                   help="best trials to confirm, besides the baseline (default 3)")
    p.add_argument("--seeds", type=_positive, default=3, help="runs of each, with fresh seeds (default 3)")
    p.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    p.add_argument("--runs", type=_positive, help="run at most this many now (default: all missing)")
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")

    p = commands.add_parser("retrain", help="train an exported trial's model and test it once")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="export file, or a study config")
    p.add_argument(
        "--study", type=_study_name, help="with a study config: use exports/<study>/best.yaml"
    )
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")
    p.add_argument("--full", action="store_true", help="train on all 50,000 training images")
    p.add_argument("--seeds", type=_positive, default=1,
                   help="trainings of each config, the first with its trial's seed (default 1)")
    p.add_argument("--no-baseline", action="store_true", help="do not train the baseline too")

    p = commands.add_parser("report", help="write reports/<study>.html with the study's plots")
    p.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///storage/optuna.db)")
    p.add_argument("--study", type=_study_name, help="one study (default: every one in STORAGE)")
    p.add_argument("--top", type=_positive, default=10, help="top trials to list (default 10)")
    for subparser in commands.choices.values():
        _from_environment(subparser)
    return parser


def _search(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.runner import run_search

    config = load_config(args.config)
    return run_search(config, args.trials, args.workers, args.storage, args.study, args.data_dir)


def _worker(args: argparse.Namespace) -> int:
    from search.runner import run_search
    from search.storage import open_storage
    from search.study import stored_config

    if not args.study:
        raise UsageError("worker needs --study (STUDY=...): the name of the study to join")
    config = stored_config(open_storage(args.storage, read_only=True), args.study)
    return run_search(config, args.trials, args.workers, args.storage, args.study, args.data_dir)


def _dashboard(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.dashboard import serve

    artifacts = args.artifacts or load_config(args.config).storage.artifacts
    return serve(
        args.storage, artifacts, args.host, args.port, args.allow_writes, args.allowed_host
    )


def _export(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.export import export

    study_name = args.study or load_config(args.config).study_name
    for path in export(args.storage, study_name, args.top):
        print(f"wrote {path}")
    return 0


def _confirm(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.confirm import confirm

    study_name = args.study or load_config(args.config).study_name
    return confirm(args.storage, study_name, args.top, args.seeds, args.workers, args.data_dir, args.runs)


def _retrain(args: argparse.Namespace) -> int:
    from search.retrain import describe, resolve_export, retrain

    path = resolve_export(args.config, args.study)
    metrics = retrain(path, args.data_dir, args.full, args.seeds, baseline=not args.no_baseline)
    print(describe(metrics))
    return 0


def _report(args: argparse.Namespace) -> int:
    import optuna

    from search.report import write_reports

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the plots' warnings repeat the page
    for path in write_reports(args.storage, args.study, args.top):
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
