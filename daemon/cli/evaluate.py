"""``chatmod eval -c CONFIG LABELLED.jsonl``: the config's primary engine against a labelled
chat set (the figures: :mod:`chatmod.evaluation`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
import trio

from chatmod.config.load import choose_config_path, load_config
from chatmod.errors import ConfigError, LabelledSetError, UsageError
from chatmod.evaluation.labelled import parse_labelled, select_split
from chatmod.evaluation.report import evaluate, render
from chatmod.evaluation.runner import EVAL_CONCURRENCY, ask_engine

EXIT_OK = 0
EXIT_BAD_INPUT = 2
DEFAULT_FLAG_PRECISION = 0.85
DEFAULT_DELETE_PRECISION = 0.9
# An engine that bounds its own calls (its fallbacks, retries) still gets a last deadline.
OWN_TIMEOUT_ENGINE_DEADLINE = 60.0


def _precision(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], found {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``eval`` command's arguments."""
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help="the config whose [engine] primary is evaluated")
    parser.add_argument("labelled", metavar="LABELLED.jsonl", type=Path,
                        help='lines {"text": ..., "label": "pass"|"flag"|"delete"}')
    parser.add_argument("--split", default=None,
                        help='only the lines whose "split" is this (e.g. dev, test)')
    parser.add_argument("--target-precision", type=_precision, default=DEFAULT_FLAG_PRECISION,
                        help="precision for 'not pass' the suggested flag_threshold must reach "
                             f"(default {DEFAULT_FLAG_PRECISION})")
    parser.add_argument("--delete-precision", type=_precision, default=DEFAULT_DELETE_PRECISION,
                        help="precision for 'delete' the suggested delete_threshold must reach "
                             f"(default {DEFAULT_DELETE_PRECISION})")
    parser.add_argument("--concurrency", type=int, default=EVAL_CONCURRENCY,
                        help=f"lines asked at once (default {EVAL_CONCURRENCY})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Evaluate; 0 when done, 2 on a bad labelled file (its line named) or config."""
    config_path, _chosen_by = choose_config_path(args.config)
    config = load_config(config_path)
    if args.concurrency < 1:
        raise UsageError(f"--concurrency: expected a number >= 1, found {args.concurrency}")
    try:
        lines = select_split(parse_labelled(_read(args.labelled)), args.split)
    except LabelledSetError as exc:
        print(f"chatmod: {args.labelled}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    name = config.engine.primary
    if name not in config.engines:
        raise ConfigError(f"engine.primary: {name!r} is not an engine that can be evaluated")
    spec = config.engines[name]
    engine = spec.build()
    timeout = (OWN_TIMEOUT_ENGINE_DEADLINE if engine.enforces_own_timeout
               else config.engine.timeout)
    outcomes = trio.run(lambda: ask_engine(engine, [line.text for line in lines],
                                           line_deadline=timeout, concurrency=args.concurrency))
    report = evaluate(lines, outcomes, flag_precision=args.target_precision,
                      delete_precision=args.delete_precision)
    report["engine"] = {"name": name, "type": spec.plugin_type}
    report["split"] = args.split
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_APPEND_NEWLINE))
    else:
        split = f", split {args.split}" if args.split else ""
        sys.stdout.write(render(report, f"engine {name} ({spec.plugin_type}) on "
                                        f"{args.labelled}{split}"))
    return EXIT_OK


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LabelledSetError(0, f"cannot read: {exc.strerror or exc}") from None
