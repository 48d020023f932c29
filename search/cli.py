"""The command line: ``python -m search {search,worker,...}``; bad input exits 2 in one line."""

from __future__ import annotations

import argparse
import os
import sys

from search.errors import UsageError


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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///storage/optuna.db)")
    p.add_argument("--study", help="study name (default: the config's study_name)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=_positive, default=20, help="trials to run in all (default 20)")
    p.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    p.add_argument("--data-dir", help="local cifar-10-batches-py folder (default: Keras' cache)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m search", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("search", help="create or resume a study and run trials")
    p.add_argument("--config", default="study_configs/cifar10.yaml", help="study config (YAML)")
    _common(p)
    _run_args(p)

    p = commands.add_parser("worker", help="join an existing study, using the config stored on it")
    _common(p)
    _run_args(p)
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
    config = stored_config(open_storage(args.storage), args.study)
    return run_search(config, args.trials, args.workers, args.storage, args.study, args.data_dir)


COMMANDS = {"search": _search, "worker": _worker}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
