"""``chatmod sandbox``: run the Chatsight sandbox in the foreground."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import trio

from chatmod.sandbox.server import DEFAULT_API_KEY, Faults, Sandbox

SANDBOX_CONFIG = """\
# Written by `chatmod sandbox`: chatmod against the local Chatsight sandbox.
[engine]
primary = "chatsight"
fallback = "flag"

[engines.chatsight]
ws_url = "{ws_url}"
http_url = "{http_url}"
api_key_env = "{key_env}"

[[sources]]
type = "stdin"
format = "text"

[[sinks]]
type = "jsonl"
path = "-"

[[sinks]]
type = "log"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ws-port", type=int, default=8765)
    parser.add_argument("--http-port", type=int, default=8766)
    parser.add_argument("--api-key-env", default="CHATSIGHT_API_KEY", metavar="NAME",
                        help=f"variable holding the key to accept (default: "
                             f"CHATSIGHT_API_KEY; when unset the key is {DEFAULT_API_KEY!r})")
    parser.add_argument("--verdicts", choices=("auto", "local", "wordlist"), default="auto",
                        help="auto: the local model when installed, else a word list")
    parser.add_argument("--write-config", metavar="FILE", type=Path,
                        help="write a chatmod config that uses this sandbox")
    faults = parser.add_argument_group("faults")
    faults.add_argument("--latency", default="0:0", metavar="MIN:MAX",
                        help="reply latency range in milliseconds")
    faults.add_argument("--cut-every", type=float, default=0, metavar="MS",
                        help="reset each websocket this long after it opened (no close frame)")
    faults.add_argument("--drop", type=float, default=0, metavar="RATE",
                        help="fraction of websocket requests never answered")
    faults.add_argument("--duplicate", type=float, default=0, metavar="RATE")
    faults.add_argument("--garbage", type=float, default=0, metavar="RATE",
                        help="fraction of replies preceded by garbage, binary or stray frames")
    faults.add_argument("--auth-failure", choices=("cut", "401"), default="cut",
                        help="how a wrong key is refused")
    faults.add_argument("--http-5xx", type=float, default=0, metavar="RATE")
    faults.add_argument("--http-429", type=float, default=0, metavar="RATE")
    faults.add_argument("--retry-after", type=float, default=1.0, metavar="SECONDS")
    faults.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reject-username", action="append", default=[], metavar="NAME",
                        help="the username check (beta) rejects NAME (repeatable); every "
                             "other name is allowed")
    account = parser.add_argument_group("account")
    account.add_argument("--search-interval", type=float, default=120.0, metavar="SECONDS",
                         help="the stats search limit (the API's is 120 s)")
    account.add_argument("--voice-speakers", choices=("document", "object", "list"),
                         default="document",
                         help="how voice replies write speakers (document: as the API's "
                              "document does, not valid JSON)")
    account.add_argument("--voice-fetches", type=int, default=3, metavar="N",
                         help="fetches until a voice job is complete")


def run(args: argparse.Namespace) -> int:
    try:
        low, high = (float(x) / 1000 for x in args.latency.split(":"))
    except ValueError:
        print("chatmod: error: --latency expects MIN:MAX in milliseconds", file=sys.stderr)
        return 2
    faults = Faults(
        latency=(low, high), cut_every=args.cut_every / 1000, drop_rate=args.drop,
        duplicate_rate=args.duplicate, garbage_rate=args.garbage,
        auth_failure=args.auth_failure, http_error_rate=args.http_5xx,
        http_429_rate=args.http_429, retry_after=args.retry_after,
    )
    key = os.environ.get(args.api_key_env) or DEFAULT_API_KEY
    sandbox = Sandbox(api_key=key, faults=faults, verdicts=args.verdicts, seed=args.seed)
    sandbox.rejected_usernames = {name.casefold() for name in args.reject_username}
    sandbox.account.search_interval = args.search_interval
    sandbox.account.voice_speakers = args.voice_speakers
    sandbox.account.voice_fetches_until_done = args.voice_fetches
    trio.run(_serve, sandbox, args)
    return 0


async def _serve(sandbox: Sandbox, args: argparse.Namespace) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(sandbox.serve, args.host, args.ws_port, args.http_port)
            key_source = (f"${args.api_key_env}" if os.environ.get(args.api_key_env)
                          else f"{DEFAULT_API_KEY!r} ({args.api_key_env} is unset)")
            print(f"chatsight sandbox: websocket {sandbox.ws_url(args.host)}, "
                  f"HTTP {sandbox.http_url(args.host)}; accepts the key {key_source}; "
                  f"verdicts: {type(sandbox.judge).__name__}", file=sys.stderr, flush=True)
            if args.write_config:
                # Renamed into place whole: whoever waits for the file never reads half of it.
                written = args.write_config.with_name(f".{args.write_config.name}.tmp")
                written.write_text(SANDBOX_CONFIG.format(
                    ws_url=sandbox.ws_url(args.host), http_url=sandbox.http_url(args.host),
                    key_env=args.api_key_env))
                written.replace(args.write_config)
                print(f"chatsight sandbox: wrote {args.write_config}", file=sys.stderr,
                      flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    counters = ", ".join(f"{k} {v}" for k, v in sorted(sandbox.stats.items())) or "no traffic"
    print(f"chatsight sandbox: stopped; {counters}", file=sys.stderr)
