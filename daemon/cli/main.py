"""The command line: ``chatmod run | check-config | config reference | plugins | tail |
review | replay | sandbox | eval`` and the Chatsight account commands ``addon | keywords |
secret | stats | voice``.

Exit codes: 0 done, 2 bad config or usage, 1 anything else fatal. Errors are one line on
stderr each (a config with several mistakes: one line per mistake); ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import orjson
import trio

from chatmod._version import __version__
from chatmod.cli import account as account_cli
from chatmod.cli import control as control_cli
from chatmod.cli import evaluate as evaluate_cli
from chatmod.cli import replay as replay_cli
from chatmod.cli import review as review_cli
from chatmod.cli import strikes as strikes_cli
from chatmod.cli import tail as tail_cli
from chatmod.config.load import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    choose_config_path,
    load_config,
)
from chatmod.config.reference import reference_markdown, splice
from chatmod.config.registry import Registry
from chatmod.config.sections import LOG_LEVELS, LogLevel
from chatmod.core.supervisor import describe
from chatmod.errors import ChatmodError, ConfigError, UsageError
from chatmod.runtime.logsetup import setup_logging
from chatmod.sandbox import cli as sandbox_cli

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
ACCOUNT_COMMANDS = ("addon", "keywords", "secret", "stats", "voice")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"chatmod: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chatmod", description="Moderate live chat.")
    parser.add_argument("--version", action="version", version=f"chatmod {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    _config_argument(run)
    run.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                     help="overrides [daemon] log_level (also after a reload)")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    check = commands.add_parser("check-config", help="validate a config and print it resolved")
    _config_argument(check)
    check.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)

    config = commands.add_parser("config", help="about the configuration")
    config_actions = config.add_subparsers(dest="config_action", required=True,
                                           metavar="ACTION")
    reference = config_actions.add_parser(
        "reference", help="print the configuration reference (Markdown), from the schema")
    reference.add_argument("--update", metavar="FILE", type=Path, default=None,
                           help="replace the reference between its markers in FILE (the "
                                "README) instead of printing it")

    commands.add_parser("plugins", help="list installed sources, sinks and engines")

    tail = commands.add_parser("tail", help="follow decision lines and print them readably")
    tail_cli.add_arguments(tail)

    review = commands.add_parser("review", help="the review queue: list, show, approve, "
                                                "overturn")
    review_cli.add_arguments(review, _config_argument)

    replay = commands.add_parser("replay", help="decide recorded lines again under a config; "
                                                "print what would change")
    replay_cli.add_arguments(replay, _config_argument)

    sandbox = commands.add_parser(
        "sandbox", help="run a local stand-in for the Chatsight API (websocket and HTTP)")
    sandbox_cli.add_arguments(sandbox)
    account_cli.add_commands(commands)
    strikes_cli.add_commands(commands)
    control_cli.add_commands(commands)

    evaluate = commands.add_parser(
        "eval", help="the primary engine's precision and recall on a labelled chat set")
    evaluate_cli.add_arguments(evaluate)
    return parser


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help=f"the config file (default: ${CONFIG_ENV}, else "
                             f"{DEFAULT_CONFIG_PATH})")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    debug: bool = args.debug
    try:
        if args.command == "run":
            return _run(args.config, debug, args.log_level)
        if args.command == "check-config":
            return _check_config(args.config)
        if args.command == "config":
            return _config_reference(args.update)
        if args.command == "sandbox":
            return sandbox_cli.run(args)
        if args.command == "review":
            return review_cli.run(args)
        if args.command == "replay":
            return replay_cli.run(args)
        if args.command == "tail":
            return tail_cli.run(args)
        if args.command in control_cli.COMMANDS:
            return control_cli.run(args)
        if args.command == strikes_cli.COMMAND:
            return strikes_cli.run(args)
        if args.command == "eval":
            return evaluate_cli.run(args)
        if args.command in ACCOUNT_COMMANDS:
            return account_cli.run(args)
        return _plugins()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        return _report(exc, debug)


def _report(exc: BaseException, debug: bool) -> int:
    error = _first_chatmod_error(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(error, ConfigError):
        label = "usage error" if isinstance(error, UsageError) else "config error"
        for line in error.lines():
            print(f"chatmod: {label}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if error is not None:
        print(f"chatmod: error: {error}", file=sys.stderr)
    else:
        # The error itself, not the nursery's group around it (e.g. "OSError: [Errno 98]
        # Address already in use" for an [http] port taken).
        print(f"chatmod: fatal: {describe(exc)}"
              + ("" if debug else " (run with --debug for the traceback)"), file=sys.stderr)
    return EXIT_FATAL


def _first_chatmod_error(exc: BaseException) -> ChatmodError | None:
    """The error to show: exception groups from nurseries are searched for ours."""
    if isinstance(exc, ChatmodError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_chatmod_error(inner)
            if found is not None:
                return found
    return None


def _run(given_path: str | None, debug: bool, log_level: LogLevel | None) -> int:
    from chatmod.runtime.service import exit_status, serve

    setup_logging(log_level or "info", debug=debug)
    config_path, chosen_by = choose_config_path(given_path)
    config = load_config(config_path, log_level=log_level)
    setup_logging(config.daemon.log_level, debug=debug, fmt=config.daemon.log_format)
    logging.getLogger("chatmod").info(
        "chatmod %s: config %s (%s); engine %s, fallback %s", __version__, config_path,
        chosen_by, config.engine.primary, " -> ".join(config.engine.fallback),
    )
    summary = trio.run(serve, config, config_path)
    return exit_status(summary)


def _check_config(given_path: str | None) -> int:
    config_path, _chosen_by = choose_config_path(given_path)
    config = load_config(config_path)
    sys.stdout.buffer.write(
        orjson.dumps(config.to_plain(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )
    print(f"chatmod: {config_path}: config OK", file=sys.stderr)
    return EXIT_OK


def _config_reference(update: Path | None) -> int:
    reference = reference_markdown(Registry.from_entry_points())
    if update is None:
        sys.stdout.write(reference)
        return EXIT_OK
    try:
        document = update.read_text(encoding="utf-8")
        update.write_text(splice(document, reference), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--update: {update}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--update: {update}: {exc}") from None
    print(f"chatmod: {update}: configuration reference updated", file=sys.stderr)
    return EXIT_OK


def _plugins() -> int:
    registry = Registry.from_entry_points()
    rows = [(info.kind, info.name, info.distribution, info.value) for info in registry.all()]
    header = ("KIND", "NAME", "FROM", "ENTRY POINT")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
              + "  " + row[3])
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
