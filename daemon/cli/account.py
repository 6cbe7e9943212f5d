"""Commands on the Chatsight account: ``chatmod addon | keywords | secret | stats | voice``.

Each takes the API key and base URL from ``[engines.chatsight]`` of ``-c FILE`` (or from
``--url`` and ``--api-key-env``). ``chatmod stats --daemon URL`` reads the daemon's own
counters instead, which it serves in the same shapes.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import trio

from chatmod.chatsight.stats import (
    SEARCH_INTERVAL,
    Counts,
    Record,
    api_range,
    format_time,
    parse_time,
    split_range,
)
from chatmod.chatsight.voice import Transcript, state_file_name
from chatmod.config.load import read_config_tables
from chatmod.config.registry import Registry
from chatmod.config.schema import parse_table
from chatmod.config.sections import DaemonSection
from chatmod.config.state import state_directory, write_private
from chatmod.errors import ConfigError, ProtocolError, UsageError

if TYPE_CHECKING:
    from chatmod.chatsight.account import AccountClient

DEFAULT_URL = "https://api.chatsight.ai"
DEFAULT_KEY_ENV = "CHATSIGHT_API_KEY"
WEBHOOK_SECRET_FILE = "chatsight-webhook-secret"
COLUMNS = ("passed", "flagged", "deleted", "total")


def add_commands(commands: Any) -> None:
    """Add the account commands to the ``chatmod`` parser's subcommands."""
    def account_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, **kwargs)
        _credentials_arguments(parser)
        return parser

    addon = account_parser("addon", help="enable Chatsight's keyword alert add-on")
    addon_actions = addon.add_subparsers(dest="addon_action", required=True, metavar="ACTION")
    enable = addon_actions.add_parser("enable", help="send keyword alerts to a webhook")
    _credentials_arguments(enable)
    enable.add_argument("--webhook", required=True, metavar="URL",
                        help="where Chatsight posts alerts (e.g. the daemon's "
                             "http://HOST:PORT/webhooks/chatsight)")
    enable.add_argument("--full-message", action="store_true",
                        help="alerts carry the message text")

    keywords = account_parser("keywords", help="add or remove alert keywords")
    keywords.add_argument("keyword_action", choices=("add", "remove"))
    keywords.add_argument("words", nargs="+", metavar="WORD")

    secret = account_parser("secret", help="issue the webhook shared secret")
    secret.add_argument("secret_action", choices=("rotate",))
    secret.add_argument("--out", type=Path, metavar="FILE",
                        help=f"where to store it (default: STATE_DIR/{WEBHOOK_SECRET_FILE})")

    stats = account_parser("stats", help="moderation statistics: lifetime counters")
    _stats_arguments(stats)
    searches = stats.add_subparsers(dest="stats_action", metavar="search")
    search = searches.add_parser("search", help="per-minute records over a time range")
    _credentials_arguments(search)
    _stats_arguments(search)
    search.add_argument("--from", dest="time_from", required=True, metavar="'YYYY-MM-DD HH:MM:SS'",
                        help="UTC")
    search.add_argument("--to", dest="time_to", required=True, metavar="'YYYY-MM-DD HH:MM:SS'")
    search.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="also draw passed/flagged/deleted per minute")

    voice = account_parser("voice", help="voice conversations")
    voice_actions = voice.add_subparsers(dest="voice_action", required=True, metavar="ACTION")
    fetch = voice_actions.add_parser("fetch", help="print a conversation's transcript and "
                                                   "verdicts")
    _credentials_arguments(fetch)
    fetch.add_argument("convo_id", metavar="CONVOID")
    fetch.add_argument("--author-key-file", type=Path, metavar="FILE",
                       help="default: STATE_DIR/voice/CONVOID.key, kept by the voice source")
    fetch.add_argument("--json", action="store_true")


def _credentials_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="take the URL and key from [engines.chatsight] here")
    parser.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"Chatsight's base URL (default {DEFAULT_URL})")
    parser.add_argument("--api-key-env", default=argparse.SUPPRESS, metavar="NAME",
                        help=f"variable holding the API key (default {DEFAULT_KEY_ENV})")
    parser.add_argument("--state-dir", default=argparse.SUPPRESS, metavar="DIR")


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--daemon", metavar="URL", default=argparse.SUPPRESS,
                        help="read the daemon's own counters (its [http] address) instead")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    formats.add_argument("--csv", action="store_true", default=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return trio.run(_run, args)


async def _run(args: argparse.Namespace) -> int:
    # The HTTP client (httpx) is imported only when an account command runs, not at every
    # start of the daemon, whose parser includes these commands.
    from chatmod.chatsight.account import AccountClient

    command = args.command
    if command == "stats":
        return await _stats(args)
    base_url, api_key, state_dir = _credentials(args)
    async with AccountClient(base_url, api_key) as client:
        if command == "addon":
            await client.enable_keyword_alerts(args.webhook, full_message=args.full_message)
            print(f"keyword alerts go to {args.webhook}"
                  + (" with the message text" if args.full_message else ""), file=sys.stderr)
        elif command == "keywords":
            for word in args.words:
                if args.keyword_action == "add":
                    await client.add_keyword(word)
                else:
                    await client.remove_keyword(word)
            print(f"keywords {'added' if args.keyword_action == 'add' else 'removed'}: "
                  f"{', '.join(args.words)}", file=sys.stderr)
        elif command == "secret":
            return await _rotate_secret(client, args, state_dir)
        elif command == "voice":
            return await _voice_fetch(client, args, state_dir)
    return 0


def _credentials(args: argparse.Namespace) -> tuple[str, str, Path | None]:
    """Base URL, API key and state directory, from the config or the options."""
    url = getattr(args, "url", None)
    key_env = getattr(args, "api_key_env", None)
    state = getattr(args, "state_dir", None)
    config_path = getattr(args, "config", None)
    if config_path is not None and (url is None or key_env is None):
        # The installed chatsight engine's own schema, found as the daemon finds it.
        engine_class = Registry.from_entry_points().get("engine", "chatsight",
                                                        "engines.chatsight").load()
        tables = read_config_tables(config_path)
        engine = tables.get("engines", {}).get("chatsight")
        if not isinstance(engine, dict):
            raise ConfigError(f"{config_path}: engines.chatsight: needed for the API key "
                              "and URL (or give --url and --api-key-env)")
        options = {k: v for k, v in engine.items() if k != "type"}
        if key_env is not None:
            options = {k: v for k, v in options.items() if not k.startswith("api_key")}
            options["api_key_env"] = key_env
        chatsight = parse_table(engine_class.Config, options, "engines.chatsight")
        if state is None:
            state = parse_table(DaemonSection, tables.get("daemon", {}), "daemon").state_dir
        return url or chatsight.http_url, chatsight.api_key.reveal(), state_directory(state or "")
    name = key_env or DEFAULT_KEY_ENV
    key = os.environ.get(name, "").strip()
    if not key:
        raise UsageError(f"--api-key-env: ${name} is not set (or give -c FILE)")
    return url or DEFAULT_URL, key, state_directory(state or "")


def _state_file(given: Path | None, state_dir: Path | None, relative: str, command: str,
                option: str) -> Path:
    """``given``, else ``relative`` under the state directory."""
    if given is not None:
        return given
    if state_dir is None:
        raise ConfigError(f"{command}: give {option} FILE, --state-dir or daemon.state_dir")
    return state_dir / relative


async def _rotate_secret(client: AccountClient, args: argparse.Namespace,
                         state_dir: Path | None) -> int:
    target = _state_file(args.out, state_dir, WEBHOOK_SECRET_FILE, "secret rotate", "--out")
    secret = await client.rotate_secret()
    write_private(target, secret)
    print(secret)
    print(f"chatmod: the webhook secret above is shown once; stored in {target} (mode 0600).\n"
          f"chatmod: point [http] chatsight_webhook_secret_file at it and reload the daemon; "
          "the previous secret no longer verifies.", file=sys.stderr)
    return 0


async def _voice_fetch(client: AccountClient, args: argparse.Namespace,
                       state_dir: Path | None) -> int:
    key_file = _state_file(args.author_key_file, state_dir,
                           f"voice/{state_file_name(args.convo_id)}.key",
                           "voice fetch", "--author-key-file")
    try:
        author_key = key_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key_file}: cannot read the author key: {exc.strerror}") from None
    transcript = await client.fetch_voice(args.convo_id, author_key)
    print_transcript(transcript, as_json=args.json)
    return 0 if transcript.ready else 1


def print_transcript(transcript: Transcript, *, as_json: bool) -> None:
    if not transcript.ready:
        print(f"chatmod: not ready yet: {transcript.detail or 'still processing'}",
              file=sys.stderr)
        return
    for sentence in transcript.sentences:
        result = sentence.result
        if as_json:
            sys.stdout.buffer.write(orjson.dumps({
                "order": sentence.order, "offset": sentence.offset, "speaker": sentence.speaker,
                "text": sentence.text, "verdict": result.action if result else None,
                "score": result.score if result else None, "error": sentence.error,
            }, option=orjson.OPT_APPEND_NEWLINE))
            continue
        verdict = (f"{result.action} {result.score:.2f}" if result and result.score is not None
                   else result.action if result else "(no verdict yet)")
        print(f"{sentence.offset}  speaker {sentence.speaker or '?':<3} {verdict:<14} "
              f"{sentence.text}")
    sys.stdout.flush()


def _time_option(option: str, text: str) -> datetime:
    """A ``--from``/``--to`` time; a usage error (exit 2) naming the option if unreadable."""
    try:
        return parse_time(text)
    except ProtocolError as exc:
        raise UsageError(f"{option}: {exc}") from None


async def _stats(args: argparse.Namespace) -> int:
    from chatmod.chatsight.account import AccountClient, search_range

    plot = getattr(args, "plot", None)
    if plot is not None:
        from chatmod.cli.plot import require_matplotlib

        require_matplotlib()  # before any request: the API allows one search per two minutes
        if not plot.parent.is_dir():
            raise UsageError(f"--plot: {plot.parent} is not a directory")
    daemon_url = getattr(args, "daemon", None)
    if daemon_url:
        base_url, api_key = daemon_url, None
    else:
        base_url, api_key, _ = _credentials(args)
    output = "json" if getattr(args, "json", False) else "csv" if getattr(args, "csv", False) \
        else "table"
    async with AccountClient(base_url, api_key) as client:
        if args.stats_action != "search":
            print_lifetime(await client.lifetime_stats(), output)
            return 0
        start, end = _time_option("--from", args.time_from), _time_option("--to", args.time_to)
        if end <= start:
            raise UsageError("--to: expected a time after --from")
        rounded = api_range(start, end)
        if rounded[0] >= rounded[1]:
            raise UsageError(f"--from/--to: the API rounds both to {format_time(rounded[0])}, "
                              "an empty range; widen it (times round to the nearest hour)")
        pieces = split_range(*rounded)
        interval = 0.0 if daemon_url else SEARCH_INTERVAL
        print(f"chatmod: the API rounds to the hour: {format_time(rounded[0])} to "
              f"{format_time(rounded[1])}; {len(pieces)} request(s)"
              + (f", {interval:g} s apart" if len(pieces) > 1 and interval else ""),
              file=sys.stderr)
        records = await search_range(client, start, end, interval=interval,
                                     on_wait=_countdown())
    print_records(records, output)
    if plot is not None:
        from chatmod.cli.plot import plot_records

        plot_records(records, plot, *rounded)
        print(f"chatmod: wrote {plot}", file=sys.stderr)
    return 0


def _countdown() -> Any:
    """A visible countdown on stderr: rewritten in place on a terminal, else every 30 s."""
    terminal = sys.stderr.isatty()
    last_line: list[int] = []

    def report(left: float, number: int, total: int) -> None:
        seconds = int(left + 0.999)
        text = (f"waiting {seconds // 60}:{seconds % 60:02d} for the API's two-minute limit "
                f"before request {number} of {total}")
        if terminal:
            print("\r" + text, end="" if seconds > 1 else "\n", file=sys.stderr, flush=True)
        elif not last_line or last_line[-1] - seconds >= 30 or last_line[-1] < seconds:
            print(text, file=sys.stderr, flush=True)
            last_line[:] = [seconds]

    return report


def print_lifetime(counts: Counts, output: str) -> None:
    values = {name: getattr(counts, name) for name in COLUMNS}
    if output == "json":
        sys.stdout.buffer.write(orjson.dumps(values, option=orjson.OPT_APPEND_NEWLINE))
    elif output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(COLUMNS)
        writer.writerow([values[c] for c in COLUMNS])
    else:
        for name, value in values.items():
            print(f"{name:<8} {value:>12,}")


def print_records(records: Sequence[Record], output: str) -> None:
    def row(record: Record) -> list[Any]:
        return [_minute(record.minute)] + [getattr(record.counts, c) for c in COLUMNS]

    if output == "json":
        sys.stdout.buffer.write(orjson.dumps(
            [dict(zip(("minute", *COLUMNS), row(r), strict=True)) for r in records],
            option=orjson.OPT_APPEND_NEWLINE))
        return
    if output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(("minute", *COLUMNS))
        writer.writerows(row(r) for r in records)
        return
    if not records:
        print("no records in this range")
        return
    print(f"{'minute (UTC)':<17} " + " ".join(f"{c:>9}" for c in COLUMNS))
    for record in records:
        minute, *numbers = row(record)
        print(f"{minute:<17} " + " ".join(f"{n:>9,}" for n in numbers))
    total = sum((r.counts for r in records), Counts())
    print(f"{'all':<17} " + " ".join(f"{getattr(total, c):>9,}" for c in COLUMNS))


def _minute(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")
