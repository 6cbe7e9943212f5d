"""``chatmod strikes show|clear AUTHOR``: read or forget an author's strikes in the store.

The command opens the store the config names (``[state]``), as the daemon does: with
``sqlite`` or ``redis`` the running daemons read the same store for every strike, so a clear
applies to the author's next message with no reload. Every clear is written to the audit log
(``chatmod.state.audit``) before it is reported as done.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import trio

from chatmod.config.load import Config, choose_config_path, load_config
from chatmod.config.state import state_directory
from chatmod.errors import ConfigError
from chatmod.policy.escalation import build_ladders
from chatmod.runtime.service import build_strike_store
from chatmod.state.audit import AuditEntry, AuditLog, current_user
from chatmod.state.strikes import MemoryStrikeStore, StrikeStore

COMMAND = "strikes"


def add_commands(commands: Any) -> None:
    """``chatmod strikes show|clear``."""
    strikes = commands.add_parser(COMMAND, help="show or clear an author's strikes")
    actions = strikes.add_subparsers(dest="strikes_action", required=True, metavar="ACTION")
    for name, text in (("show", "print the author's strikes per channel (JSON)"),
                       ("clear", "forget the author's strikes (audited)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("author")
        action.add_argument("--channel", default=None, help="only this channel")
        action.add_argument("-c", "--config", metavar="FILE", default=None,
                            help="the daemon's config file")
        if name == "clear":
            action.add_argument("--why", default="", help="the reason, for the audit log")
            action.add_argument("--by", default=None, help="who (default: your user name)")


def run(args: argparse.Namespace) -> int:
    config = load_config(choose_config_path(args.config)[0])
    store = build_strike_store(config)
    if isinstance(store, MemoryStrikeStore):
        raise ConfigError.at("state.backend", "strikes are kept in the daemon's memory only; "
                                              "set [daemon] state_dir or [state] backend")
    return trio.run(_run, args, config, store)


async def _run(args: argparse.Namespace, config: Config, store: StrikeStore) -> int:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            if args.strikes_action == "show":
                print(orjson.dumps(await _show(config, store, args.author, args.channel))
                      .decode())
            else:
                cleared = await store.clear(args.author, args.channel)
                record = AuditLog(state_directory(config.daemon.state_dir)).record(AuditEntry(
                    who=args.by or current_user(), what="strikes.clear", why=args.why,
                    detail={"author": args.author, "channel": args.channel,
                            "cleared": cleared}))
                print(orjson.dumps(record).decode())
        finally:
            nursery.cancel_scope.cancel()
    return 0


async def _show(config: Config, store: StrikeStore, author: str,
                channel: str | None) -> dict[str, Any]:
    default, ladders = build_ladders(config.policy)
    now = time.time()
    counts: dict[str, int] = {}
    for where in [channel] if channel is not None else await store.channels_of(author):
        ladder = ladders.get(where, default)
        counts[where] = await store.count(where, author, now, ladder.window)
    return {"author": author, "strikes": counts}
