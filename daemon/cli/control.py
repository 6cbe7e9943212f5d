"""``chatmod exempt add|remove|list`` and ``chatmod channel set``: live changes, sent to the
running daemon over its control socket (:mod:`chatmod.state.control`)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import orjson
import trio

from chatmod.config.load import choose_config_path, load_config
from chatmod.config.state import state_directory
from chatmod.errors import ConfigError, ControlError, UsageError
from chatmod.policy.ladder import parse_duration
from chatmod.state.audit import current_user
from chatmod.state.control import MAX_EXEMPTION, SOCKET_NAME, send_request
from chatmod.state.live import parse_switch

COMMANDS = ("exempt", "channel")


def add_commands(commands: Any) -> None:
    """``chatmod exempt ...`` and ``chatmod channel ...``."""
    exempt = commands.add_parser("exempt", help="exempt an author, live (audited)")
    actions = exempt.add_subparsers(dest="control_action", required=True, metavar="ACTION")
    for name, text in (("add", "exempt AUTHOR (in --channel, else everywhere)"),
                       ("remove", "end AUTHOR's exemption"),
                       ("list", "print the live exemptions (of AUTHOR, when given)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("author", nargs="?" if name == "list" else None, default="")
        action.add_argument("--channel", default="", help="only this channel")
        _common(action)
        if name == "add":
            action.add_argument("--for", dest="duration", default=None,
                                help="how long, e.g. 30m, 2h, 1d (default: until removed)")
    channel = commands.add_parser("channel", help="change a channel's switches, live")
    channel_actions = channel.add_subparsers(dest="control_action", required=True,
                                             metavar="ACTION")
    set_ = channel_actions.add_parser("set", help="e.g. chatmod channel set '#kids' shadow=true")
    set_.add_argument("channel")
    set_.add_argument("switches", nargs="+", metavar="NAME=VALUE")
    _common(set_)
    list_ = channel_actions.add_parser("list", help="print the switches set live (of CHANNEL, "
                                                    "when given)")
    list_.add_argument("channel", nargs="?", default="")
    _common(list_)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--why", default="", help="the reason, for the audit log")
    parser.add_argument("--by", default=None, help="who (default: your user name)")
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help="the daemon's config file (for its state_dir)")


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The request for the parsed command line; ConfigError for a bad duration or switch."""
    request: dict[str, Any] = {"op": f"{args.command}.{args.control_action}",
                               "by": args.by or current_user(), "why": args.why,
                               "channel": args.channel}
    if args.command == "exempt":
        request["author"] = args.author
        if getattr(args, "duration", None) is not None:
            try:
                request["for"] = parse_duration(args.duration)
            except ValueError as exc:
                raise UsageError.at("--for", str(exc)) from None
            if request["for"] >= MAX_EXEMPTION:  # the daemon would refuse it less clearly
                raise UsageError.at("--for", f"at most {MAX_EXEMPTION:.0f} seconds; leave "
                                              f"--for out for an exemption until removed")
    elif args.control_action == "set":
        try:
            request["switches"] = dict(parse_switch(s) for s in args.switches)
        except ControlError as exc:
            raise UsageError(str(exc)) from None
    return request


def run(args: argparse.Namespace) -> int:
    config = load_config(choose_config_path(args.config)[0])
    state = state_directory(config.daemon.state_dir)
    if state is None or not config.state.control:
        raise ConfigError.at("state.control", "live control needs [daemon] state_dir and "
                                              "[state] control = true")
    request = build_request(args)
    try:
        reply = trio.run(send_request, state, request)
    except (OSError, trio.TooSlowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ControlError(
            f"cannot reach the daemon's control socket {state / SOCKET_NAME}: {reason} (is "
            f"chatmod running with this config? it opens the socket once it is ready; the "
            f"change was not made)") from None
    print(orjson.dumps(with_readable_times(reply)).decode())
    return 0 if reply.get("ok") else 1


def with_readable_times(reply: dict[str, Any]) -> dict[str, Any]:
    """``reply`` with an ``until_utc`` (ISO 8601) beside each exemption's ``until`` (epoch
    seconds, kept for scripts): an operator reads the one, a script the other."""
    records = [reply["exemption"]] if isinstance(reply.get("exemption"), dict) else []
    if isinstance(reply.get("exemptions"), list):
        records += [r for r in reply["exemptions"] if isinstance(r, dict)]
    for record in records:
        until = record.get("until")
        if isinstance(until, int | float) and not isinstance(until, bool):
            try:
                moment = datetime.fromtimestamp(until, tz=UTC)
            except (OverflowError, OSError, ValueError):
                continue
            record["until_utc"] = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return reply
