"""chatmod against the seed's own Node reference client, on one loopback stand-in server.

    .venv/bin/python bench/vs_node.py [--messages 150000] [--http-messages 20000] [--repeat 3]
                                      [--window 1024] [--skip-pipeline]
                                      [--only ws|http|cuts] [--before PYTHONPATH]

Installs what it needs on first use (``npm install`` into bench/node/node_modules, which git
ignores). One run measures:

1. websocket: the reference client of seed 000 (Node, npm ``websocket``, sends everything and
   matches replies by reference) and ``chatmod run`` (stdin jsonl -> Chatsight websocket ->
   jsonl file), both against a Node stand-in (npm ``ws``) that answers at once in Chatsight's
   reply shape;
2. HTTP fallback: the websocket unreachable (nothing listens on its port), so chatmod sends
   every message over ``POST /text/moderation``; next to a plain Node keep-alive client with 32
   requests at once, on the same stand-in;
3. latency with the websocket reset every second (the stand-in cuts it), at ``--cut-rate``
   msgs/s: stdin line to decision line, by route (ws, or http for what the cuts moved);
4. bench/pipeline.py's ratios (pipeline with a no-op engine vs a plain loop; stdin -> local
   engine -> jsonl vs the engine alone), unless ``--skip-pipeline``.

Each client runs pinned to CPU 0 and the server to CPU 1 (taskset). Each row is the best of
``--repeat`` interleaved runs; the start-up (the same command on no messages: process start,
connect, exit) is timed the same way and subtracted from wall time and from CPU time. CPU per
message is the client process's user + system time. The machine is shared and noisy: read the
ratios, which come from one run, not the absolute rates. Short runs mislead: a 30,000-message
websocket run is about a second of work beside a 0.45 s start-up, and the Node HTTP client
warms up (its JIT) over the first thousands of requests: at 5,000 it cost 185-254 µs a request,
at 20,000 100-137. Hence the defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
KEY = "bench-key"
CLIENT_CPU, SERVER_CPU = "0", "1"
RUN_TIMEOUT = 900.0  # seconds one measured run may take before the bench gives up

DAEMON_CONFIG = """
[daemon]
stats_interval = 0
log_level = "error"
concurrency = {window}
queue_size = {window}
[cache]
enabled = false
[engine]
primary = "chatsight"
[engines.chatsight]
ws_url = "{ws_url}"
http_url = "{http_url}"
api_key_env = "CHATSIGHT_API_KEY"
max_in_flight = {window}
[[sources]]
type = "stdin"
format = "jsonl"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


@dataclass(frozen=True)
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds of the client process and its threads


def ensure_node_modules() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("vs_node.py needs node and npm on PATH")
    if not (NODE_DIR / "node_modules" / "ws").is_dir() or not (
            NODE_DIR / "node_modules" / "websocket").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                       check=True, timeout=600)


def pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") else command


def timed(command: list[str], stdin_path: Path | None, env: dict[str, str]) -> Run:
    """Wall and CPU seconds of one client process, which must exit 0."""
    with (stdin_path.open("rb") if stdin_path else open(os.devnull, "rb")) as stdin:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL, env=env)
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            raise
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(command)}")
    return Run(wall, usage.ru_utime + usage.ru_stime)


class StandIn:
    """The Node stand-in server, pinned to its own CPU; ``cut_every_ms`` > 0 resets every
    websocket that often."""

    def __init__(self, cut_every_ms: int = 0) -> None:
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, ["node", str(NODE_DIR / "server.js"), KEY, str(cut_every_ms)]),
            stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        ports = orjson.loads(self.process.stdout.readline() or b"{}")
        if "ws_port" not in ports:
            self.stop()
            raise SystemExit("the Node stand-in server did not start")
        self.ws_url = f"ws://127.0.0.1:{ports['ws_port']}/text/moderation"
        self.http_url = f"http://127.0.0.1:{ports['http_port']}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def unreachable_ws_url() -> str:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}/text/moderation"


def write_input(path: Path, count: int) -> None:
    path.write_bytes(b"".join(
        orjson.dumps({"id": f"m-{i}", "text": f"hello there number {i}"}) + b"\n"
        for i in range(count)))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def latency_with_cuts(tmp: Path, rate: float, seconds: float, cut_every_ms: int
                      ) -> dict[str, list[float]]:
    """chatmod at ``rate`` msgs/s for ``seconds`` against a stand-in that resets the websocket
    every ``cut_every_ms``: each message's time from its stdin line to its decision line on
    stdout (ms), by route."""
    server = StandIn(cut_every_ms)
    by_route: dict[str, list[float]] = {}
    try:
        config = tmp / "cuts.toml"
        config.write_text(DAEMON_CONFIG.format(window=1024, ws_url=server.ws_url,
                                               http_url=server.http_url, out="-"))
        process = subprocess.Popen(
            pinned(CLIENT_CPU, [sys.executable, "-m", "chatmod", "run", "-c", str(config)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "CHATSIGHT_API_KEY": KEY})
        assert process.stdin is not None
        assert process.stdout is not None
        stdout = process.stdout
        sent: dict[str, float] = {}

        def read() -> None:
            for line in stdout:
                received = time.perf_counter()
                decision = orjson.loads(line)
                started = sent.pop(decision["id"], None)
                if started is not None:
                    by_route.setdefault(decision["route"], []).append(
                        (received - started) * 1000)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(1.0)  # connected
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            line_id = f"c-{i}"
            sent[line_id] = time.perf_counter()
            process.stdin.write(orjson.dumps({"id": line_id, "text": f"hello there {i}"})
                                + b"\n")
            process.stdin.flush()
        process.stdin.close()
        process.wait(timeout=RUN_TIMEOUT)
        reader.join()
    finally:
        server.stop()
    return by_route


@dataclass
class Row:
    label: str
    count: int
    measure: Callable[[int], Run]  # runs the client on that many messages
    check: Callable[[], None] = lambda: None
    runs: list[Run] = field(default_factory=list)
    startups: list[Run] = field(default_factory=list)

    def once(self) -> None:
        self.startups.append(self.measure(0))
        self.runs.append(self.measure(self.count))
        self.check()

    @property
    def rate(self) -> float:
        wall = min(r.wall for r in self.runs) - min(r.wall for r in self.startups)
        return self.count / max(wall, 1e-9)

    @property
    def cpu_us_per_message(self) -> float:
        cpu = min(r.cpu for r in self.runs) - min(r.cpu for r in self.startups)
        return cpu / self.count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=150_000)
    parser.add_argument("--http-messages", type=int, default=20_000,
                        help="messages for the HTTP fallback rows (slower, so fewer)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=1024,
                        help="chatmod's concurrency and max_in_flight")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--only", choices=("ws", "http", "cuts"), help="run only this part")
    parser.add_argument("--cut-rate", type=float, default=1000.0,
                        help="msgs/s for the latency run with the websocket reset every second")
    parser.add_argument("--cut-seconds", type=float, default=10.0)
    parser.add_argument("--before", metavar="PYTHONPATH",
                        help="also run chatmod with this PYTHONPATH (an export of an earlier "
                             "commit, its daemon/ as chatmod/), interleaved: before vs after")
    args = parser.parse_args()
    ensure_node_modules()
    env = {**os.environ, "CHATSIGHT_API_KEY": KEY}
    python = [sys.executable, "-m", "chatmod", "run", "-c"]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        inputs = {n: tmp / f"in-{n}.jsonl" for n in {0, args.messages, args.http_messages}}
        for n, path in inputs.items():
            write_input(path, n)
        out = tmp / "out.jsonl"
        server = StandIn()
        try:
            ws_config, http_config = tmp / "ws.toml", tmp / "http.toml"
            ws_config.write_text(DAEMON_CONFIG.format(
                window=args.window, ws_url=server.ws_url, http_url=server.http_url, out=out))
            http_config.write_text(DAEMON_CONFIG.format(
                window=args.window, ws_url=unreachable_ws_url(), http_url=server.http_url,
                out=out))

            def node(script: str, url: str, *extra: str) -> Callable[[int], Run]:
                return lambda n: timed(pinned(CLIENT_CPU, [
                    "node", str(NODE_DIR / script), url, KEY, str(n), *extra]), None, env)

            def chatmod(config: Path, run_env: dict[str, str] = env) -> Callable[[int], Run]:
                def measure(n: int) -> Run:
                    out.unlink(missing_ok=True)
                    return timed(pinned(CLIENT_CPU, [*python, str(config)]), inputs[n],
                                 run_env)
                return measure

            def decisions(count: int, route: str) -> Callable[[], None]:
                def check() -> None:
                    routes = Counter(orjson.loads(line)["route"] for line in out.open("rb"))
                    if routes != {route: count}:
                        raise SystemExit(f"chatmod's decisions for {count} lines came by "
                                         f"{dict(routes)}, expected all by {route!r}")
                return check

            ws_rows = [
                Row("seed reference client (Node, npm websocket)", args.messages,
                    node("reference_client.js", server.ws_url)),
                Row("chatmod: stdin jsonl -> Chatsight ws -> jsonl file", args.messages,
                    chatmod(ws_config), decisions(args.messages, "ws")),
            ]
            http_rows = [
                Row("Node keep-alive HTTP client, 32 at once", args.http_messages,
                    node("http_client.js", server.http_url, "32")),
                Row("chatmod: HTTP fallback (ws unreachable)", args.http_messages,
                    chatmod(http_config), decisions(args.http_messages, "http")),
            ]
            if args.before:
                before_env = {**env, "PYTHONPATH": args.before}
                ws_rows.append(Row("chatmod before: stdin jsonl -> Chatsight ws -> jsonl file",
                                   args.messages, chatmod(ws_config, before_env),
                                   decisions(args.messages, "ws")))
                http_rows.append(Row("chatmod before: HTTP fallback (ws unreachable)",
                                     args.http_messages, chatmod(http_config, before_env),
                                     decisions(args.http_messages, "http")))
            groups = [g for g, name in ((ws_rows, "ws"), (http_rows, "http"))
                      if args.only in (None, name)]
            for _ in range(args.repeat):  # interleaved: noise hits every row alike
                for rows in groups:
                    for row in rows:
                        row.once()
        finally:
            server.stop()
        cuts = (latency_with_cuts(tmp, args.cut_rate, args.cut_seconds, 1000)
                if args.only in (None, "cuts") else {})

    if groups:
        print(f"\nbest of {args.repeat} interleaved runs, start-up subtracted, clients on CPU "
              f"{CLIENT_CPU}, stand-in server on CPU {SERVER_CPU}, chatmod window "
              f"{args.window}\n")
        print("| run | messages | msgs/s | ratio | CPU µs/msg |")
        print("| --- | ---: | ---: | ---: | ---: |")
    for rows in groups:
        reference = rows[0].rate
        for row in rows:
            print(f"| {row.label} | {row.count:,} | {row.rate:,.0f} | "
                  f"{row.rate / reference:.2f}x | {row.cpu_us_per_message:,.1f} |")
    if cuts:
        total = sum(len(v) for v in cuts.values())
        print(f"\nlatency at {args.cut_rate:g} msgs/s for {args.cut_seconds:g} s, the websocket "
              "reset every second (stdin line -> decision line)\n")
        print("| route | messages | p50 ms | p99 ms |")
        print("| --- | ---: | ---: | ---: |")
        for route, values in sorted(cuts.items()):
            print(f"| {route} | {len(values):,} ({len(values) / total:.0%}) | "
                  f"{percentile(values, 0.5):.1f} | {percentile(values, 0.99):.1f} |")
    if not args.skip_pipeline and args.only is None:
        print("\nbench/pipeline.py:", flush=True)
        subprocess.run([sys.executable, str(HERE / "pipeline.py"), "--repeat",
                        str(args.repeat)], check=True, timeout=RUN_TIMEOUT * 3)


if __name__ == "__main__":
    main()
