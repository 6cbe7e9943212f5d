"""``chatmod replay -c NEW.toml FILE... [--rescore] [--json]``: recorded decisions (or raw
chat lines) decided again under a new config; prints what would change. The logic is
:mod:`chatmod.review.replay`; this reads the files and runs the engines, started only if
some line needs one. Nothing live is touched: no sink, no review queue, no stats store."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import trio

from chatmod.config.load import Config, choose_config_path, load_config
from chatmod.core.engine_chain import EngineChain
from chatmod.core.model import Decision, Message, Verdict
from chatmod.errors import UsageError
from chatmod.policy.escalation import Escalation, build_ladders
from chatmod.policy.rules import Policy
from chatmod.review.replay import ReplayClock, ReplayReport, replay
from chatmod.runtime.service import build_cache, last_resort
from chatmod.state.strikes import MemoryStrikeStore

STDIN = "-"


def add_arguments(parser: argparse.ArgumentParser, config_argument: Any) -> None:
    config_argument(parser)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="decision lines (jsonl sink output) or chat lines; - is stdin")
    parser.add_argument("--rescore", action="store_true",
                        help="ask the engines again for every line, even where the recorded "
                             "verdict could be reused")
    parser.add_argument("--json", action="store_true", help="the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    path, _chosen_by = choose_config_path(args.config)
    config = load_config(path)
    for name in args.files:
        if name != STDIN and not Path(name).is_file():
            raise UsageError(f"{name}: no such file")
    report = trio.run(_replay, config, args.files, args.rescore)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report.as_dict(),
                                             option=orjson.OPT_APPEND_NEWLINE))
    else:
        for line in report.lines_of_text():
            print(line)
    return 0


def read_lines(names: list[str]) -> Iterator[tuple[int, bytes]]:
    """Every line of the files, numbered across them."""
    number = 0
    for name in names:
        with (contextlib.nullcontext(sys.stdin.buffer) if name == STDIN
              else Path(name).open("rb")) as stream:
            for data in stream:
                number += 1
                yield number, data.rstrip(b"\n")


async def _replay(config: Config, names: list[str], rescore: bool) -> ReplayReport:
    engines = [config.engines[name].build() for name in config.engine_chain()]
    chain = EngineChain(engines, last_resort=last_resort(config), timeout=config.engine.timeout,
                        cache=build_cache(config))
    policy, channels = Policy(config.policy), config.policy.channels
    started = trio.Event()
    starting = trio.Lock()

    # Strikes are counted again in file order, in memory, at each line's recorded time: the
    # live store (SQLite, Redis) is never touched.
    clock = ReplayClock()
    default, per_channel = build_ladders(config.policy)
    escalation = (Escalation(config.policy, MemoryStrikeStore(), clock=clock)
                  if default.enabled or any(ladder.enabled for ladder in per_channel.values())
                  else None)

    async def decide(message: Message, verdict: Verdict) -> Decision:
        decision = policy.decide(message, verdict, 0.0)
        if escalation is None:
            return decision
        (escalated,) = await escalation.apply([decision])
        await escalation.delivered([escalated])
        return escalated

    def rule_of(decision: Decision) -> str:
        channel = decision.message.channel
        where = f"policy.channels.{channel!r}" if channel in channels else "policy"
        if decision.exempt:
            return f"{where}: exempt author"
        if decision.step is not None:
            return f"{where}: ladder step {decision.step}"
        return f"{where}: verdict {decision.verdict.action}"

    async with trio.open_nursery() as nursery:

        async def ask(message: Message) -> Verdict:
            async with starting:
                if not started.is_set():
                    for engine in engines:
                        await nursery.start(engine.run)
                    started.set()
            return await chain.moderate(message)

        report = await replay(read_lines(names), engines[0], ask, decide, rescore=rescore,
                              rule_of=rule_of, clock=clock)
        nursery.cancel_scope.cancel()
    return report
