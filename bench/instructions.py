"""Instructions chatmod executes per message on the websocket route (or the HTTP fallback's),
counted by valgrind: a figure a noisy machine does not move.

    .venv/bin/python bench/instructions.py [--messages 20000] [--route ws|http]
                                           [--before PYTHONPATH]

Timing on a shared 2-core machine moves by 20% from run to run, more than most changes to
the per-message path save. valgrind's cachegrind counts the instructions the daemon executes
(``I refs``), which stay the same from run to run within about 0.1%. The bench runs
``chatmod run`` (stdin jsonl -> Chatsight websocket -> jsonl file, the configuration of
bench/vs_node.py) against the same Node stand-in, under cachegrind, twice: on 2,000 messages
and on ``--messages`` + 2,000; the difference divided by ``--messages`` is the count a message
costs, start-up excluded. ``--route http`` counts the HTTP fallback instead, with the
websocket unreachable as bench/vs_node.py's ``--only http`` runs it (a request costs more
than twice a websocket message: 5,000 messages are enough there). With ``--before`` (a
PYTHONPATH holding another commit's daemon/ as chatmod/, as bench/vs_node.py takes it) the
same is counted for it, and the ratio printed.

Under valgrind the daemon runs about 50 times slower, so the websocket's deadlines are set
far out (no request may go over HTTP because valgrind was slow). Installs valgrind with
apt-get when it is missing (as root), and the stand-in's npm packages on first use.

An instruction count is not time: it does not see cache misses, system calls' cost in the
kernel, or the other process. It is for comparing two versions of chatmod's own code; the
ratio to the Node client stays bench/vs_node.py's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import vs_node

START_UP_MESSAGES = 2000
# Deadlines far beyond what valgrind's slowness can reach: every message stays on the socket.
SLOW_DEADLINES = "verdict_timeout = 600.0\nhttp_deadline = 600.0\n"


def ensure_valgrind() -> str:
    found = shutil.which("valgrind")
    if found is not None:
        return found
    if os.geteuid() != 0:
        sys.exit("valgrind is missing: install it (apt-get install valgrind)")
    subprocess.run(["apt-get", "install", "-y", "-q", "valgrind"], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ,
                                                   "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("valgrind")
    if found is None:
        sys.exit("valgrind could not be installed")
    return found


def count_instructions(valgrind: str, tmp: Path, messages: int, pythonpath: str | None,
                       label: str, route: str = "ws") -> int:
    """The instructions one ``chatmod run`` of ``messages`` messages executed, checking that
    every message got its decision over ``route``."""
    source = tmp / f"in-{messages}.jsonl"
    if not source.exists():
        vs_node.write_input(source, messages)
    out = tmp / f"out-{label}-{messages}.jsonl"
    server = vs_node.StandIn()
    try:
        config = tmp / f"{label}.toml"
        config.write_text(vs_node.DAEMON_CONFIG.format(
            window=1024, http_url=server.http_url, out=out,
            ws_url=server.ws_url if route == "ws" else vs_node.unreachable_ws_url(),
        ).replace("max_in_flight = 1024\n", "max_in_flight = 1024\n" + SLOW_DEADLINES))
        env = {**os.environ, "CHATSIGHT_API_KEY": vs_node.KEY}
        env.pop("PYTHONPATH", None)
        # Neither run may write bytecode the other then reads: both compile the same.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        command = [valgrind, "--tool=cachegrind", "--cache-sim=no",
                   f"--cachegrind-out-file={tmp / 'cachegrind.out'}",
                   sys.executable, "-m", "chatmod", "run", "-c", str(config)]
        with source.open("rb") as stdin:
            done = subprocess.run(command, stdin=stdin, env=env, capture_output=True,
                                  text=True, timeout=vs_node.RUN_TIMEOUT, check=False)
    finally:
        server.stop()
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"{label}: chatmod under valgrind failed:\n{done.stderr[-3000:]}")
    marker = b'"route":"%s"' % route.encode()
    routes = [line for line in out.read_bytes().splitlines() if marker in line]
    if len(routes) != messages:
        sys.exit(f"{label}: {len(routes)} of {messages} decisions came over {route}")
    return int(found.group(1).replace(",", ""))


def per_message(valgrind: str, tmp: Path, messages: int, pythonpath: str | None,
                label: str, route: str) -> float:
    start_up = count_instructions(valgrind, tmp, START_UP_MESSAGES, pythonpath, label, route)
    whole = count_instructions(valgrind, tmp, START_UP_MESSAGES + messages, pythonpath, label,
                               route)
    return (whole - start_up) / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--route", choices=("ws", "http"), default="ws",
                        help="the websocket route, or the HTTP fallback (websocket unreachable)")
    parser.add_argument("--before", metavar="PYTHONPATH",
                        help="also count another version (a PYTHONPATH holding its daemon/ "
                             "as chatmod/) and print the ratio")
    args = parser.parse_args()
    valgrind = ensure_valgrind()
    vs_node.ensure_node_modules()
    with tempfile.TemporaryDirectory(prefix="chatmod-instructions-") as name:
        tmp = Path(name)
        now = per_message(valgrind, tmp, args.messages, None, "now", args.route)
        print(f"chatmod, stdin jsonl -> Chatsight {args.route} -> jsonl file: {now:,.0f} "
              f"instructions a message ({args.messages:,} messages, start-up excluded)")
        if args.before:
            before = per_message(valgrind, tmp, args.messages, args.before, "before",
                                 args.route)
            print(f"before ({args.before}): {before:,.0f} instructions a message; "
                  f"now / before = {now / before:.3f}")


if __name__ == "__main__":
    main()
