"""The command line: ``python -m search {search,worker,...}``; errors are one line, with exit
code 2 (bad input), 3 (storage failed) or 4 (trials kept failing)."""

from __future__ import annotations

import argparse
import sys

from search.errors import SearchError, UsageError

DEFAULT_CONFIG = "study_configs/cifar10.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def _positive(text: str) -> int:
    return _integer(text, 1)


def _seed(text: str) -> int:
    return _integer(text, 0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///storage/optuna.db)")
    p.add_argument("--study", help="study name (default: the config's study_name)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=_positive, default=20, help="trials to run in all (default 20)")
    p.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")
    p.add_argument("--launch-seed", type=_seed, metavar="N",
                   help="sample as the launch with this seed did (default: a fresh seed each run)")


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

    p = commands.add_parser("export", help="write the best trial's settings to exports/<study>/")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="study config naming the study")
    _common(p)
    p.add_argument("--top", type=_positive, default=1, help="also write the k best to top.yaml")

    p = commands.add_parser("retrain", help="train an exported trial's model and test it once")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="export file, or a study config")
    p.add_argument("--study", help="with a study config: use exports/<study>/best.yaml")
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")
    p.add_argument("--full", action="store_true", help="train on all 50,000 training images")

    p = commands.add_parser("report", help="write reports/<study>.html with the study's plots")
    p.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///storage/optuna.db)")
    p.add_argument("--study", help="one study (default: every study in the storage)")
    p.add_argument("--top", type=_positive, default=10, help="top trials to list (default 10)")
    return parser


def _search(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.runner import run_search

    config = load_config(args.config)
    return run_search(config, args.trials, args.workers, args.storage, args.study, args.data_dir,
                      args.launch_seed)


def _worker(args: argparse.Namespace) -> int:
    from search.runner import run_search
    from search.storage import open_storage
    from search.study import stored_config

    if not args.study:
        raise UsageError("worker needs --study (STUDY=...): the name of the study to join")
    config = stored_config(open_storage(args.storage, read_only=True), args.study)
    return run_search(config, args.trials, args.workers, args.storage, args.study, args.data_dir,
                      args.launch_seed)


def _dashboard(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.dashboard import serve

    artifacts = args.artifacts or load_config(args.config).storage.artifacts
    return serve(args.storage, artifacts, args.host, args.port)


def _export(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.export import export

    study_name = args.study or load_config(args.config).study_name
    for path in export(args.storage, study_name, args.top):
        print(f"wrote {path}")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from search.retrain import describe, resolve_export, retrain

    metrics = retrain(resolve_export(args.config, args.study), args.data_dir, args.full)
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
    "retrain": _retrain,
    "report": _report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SearchError as exc:  # UsageError 2, StorageUnavailable 3, TrialsFailing 4
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
