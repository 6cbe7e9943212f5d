"""What chatmod adds in latency, and its memory with many messages in flight and over time.

    .venv/bin/python bench/footprint.py latency [--rate 1000] [--seconds 10]
    .venv/bin/python bench/footprint.py in-flight [--window 10000] [--messages 40000]
    .venv/bin/python bench/footprint.py long [--messages 1000000]

- latency: lines written to stdin at ``--rate`` per second, each timed until its decision
  line is read from stdout; once through a plain Python loop (read, parse, write a decision
  line, flush) and once through ``chatmod run`` (stdin jsonl -> wordlist engine with empty
  lists, which answers at once -> jsonl sink on stdout). chatmod's p50/p99 minus the plain
  loop's is what the pipeline adds (both pay the same pipes and the same reader).
- in-flight: ``chatmod run`` against the Chatsight sandbox answering every request after 3 s,
  with ``--window`` messages allowed in flight: the daemon's RSS sampled every 50 ms, reported
  at its peak and when most messages were in flight (read from the input, not yet decided).
- long: ``--messages`` lines through the no-op pipeline (stdin file -> wordlist -> /dev/null),
  RSS sampled as the input is read: flat means no per-message growth.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import orjson

WORDS = ("hello", "gg", "nice", "play", "lol", "what", "a", "great", "idea", "pizza", "stream",
         "you", "are", "the", "best", "worst", "fun", "again", "team", "win", "lose")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
SAMPLE_EVERY = 0.05
SANDBOX_LATENCY_MS = 3000
KEY = "bench-footprint-key"

PLAIN_LOOP = r"""
import sys, time, orjson
out = sys.stdout.buffer
for raw in sys.stdin.buffer:
    m = orjson.loads(raw)
    out.write(orjson.dumps({
        "id": m["id"], "source": "stdin", "channel": None, "author": None, "verdict": "pass",
        "score": 0.0, "action": "none", "engine": "plain", "route": "local",
        "latency_ms": 0.0, "ts": time.time(), "scores": {}, "text": m["text"]},
        option=orjson.OPT_APPEND_NEWLINE))
    out.flush()
"""

NO_OP = """
[daemon]
stats_interval = 0
log_level = "warning"
[engine]
primary = "wordlist"
[[sources]]
type = "stdin"
format = "jsonl"
[[sinks]]
type = "jsonl"
path = "{out}"
"""

HELD = """
[daemon]
stats_interval = 0
log_level = "warning"
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
verdict_timeout = 30.0
[[sources]]
type = "stdin"
format = "jsonl"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


def chatmod(config: Path) -> list[str]:
    return [sys.executable, "-m", "chatmod", "run", "-c", str(config)]


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` now (0 once it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError):
        return 0.0
    return pages * PAGE_KIB / 1024


def input_line(i: int, rng: random.Random) -> bytes:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14)))
    return orjson.dumps({"id": f"m-{i}", "text": text, "author": f"user{i % 500}",
                         "channel": f"#room{i % 7}"}, option=orjson.OPT_APPEND_NEWLINE)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def paced_latency(command: list[str], rate: float, seconds: float) -> tuple[float, float]:
    """p50 and p99 ms from a line written to ``command``'s stdin to its line on stdout."""
    count = int(rate * seconds)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            received = time.perf_counter()
            started = sent.pop(orjson.loads(line)["id"], None)
            if started is not None:
                latencies.append((received - started) * 1000)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(1.5)  # start-up
    rng = random.Random(1)
    lines = [input_line(i, rng) for i in range(count)]
    start = time.perf_counter()
    for i, line in enumerate(lines):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[f"m-{i}"] = time.perf_counter()
        process.stdin.write(line)
        process.stdin.flush()
    process.stdin.close()
    process.wait(timeout=120)
    reader.join()
    if len(latencies) != count:
        raise SystemExit(f"{command[:3]}: {len(latencies)} of {count} lines came back")
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def latency(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        config = Path(tmp_dir) / "noop.toml"
        config.write_text(NO_OP.format(out="-"))
        plain = paced_latency([sys.executable, "-c", PLAIN_LOOP], args.rate, args.seconds)
        daemon = paced_latency(chatmod(config), args.rate, args.seconds)
    print(f"\nat {args.rate:g} msgs/s for {args.seconds:g} s: p50 and p99 in ms\n")
    print("| run | p50 ms | p99 ms |\n| --- | ---: | ---: |")
    print(f"| plain loop (stdin line -> stdout line) | {plain[0]:.3f} | {plain[1]:.3f} |")
    print(f"| chatmod, no-op engine | {daemon[0]:.3f} | {daemon[1]:.3f} |")
    print(f"| added by chatmod | {daemon[0] - plain[0]:.3f} | {daemon[1] - plain[1]:.3f} |")


class Sandbox:
    def __init__(self, tmp: Path) -> None:
        config = tmp / "sandbox.toml"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatmod", "sandbox", "--ws-port", "0", "--http-port", "0",
             "--verdicts", "wordlist", "--write-config", str(config),
             "--latency", f"{SANDBOX_LATENCY_MS}:{SANDBOX_LATENCY_MS}"],
            env={**os.environ, "CHATSIGHT_API_KEY": KEY}, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not config.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the sandbox did not start")
            time.sleep(0.05)
        engine = tomllib.loads(config.read_text())["engines"]["chatsight"]
        self.ws_url, self.http_url = engine["ws_url"], engine["http_url"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def in_flight(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        sandbox = Sandbox(tmp)
        try:
            out, config = tmp / "out.jsonl", tmp / "held.toml"
            config.write_text(HELD.format(window=args.window, ws_url=sandbox.ws_url,
                                          http_url=sandbox.http_url, out=out))
            process = subprocess.Popen(chatmod(config), stdin=subprocess.PIPE,
                                       env={**os.environ, "CHATSIGHT_API_KEY": KEY})
            assert process.stdin is not None
            fed = 0
            rng = random.Random(2)
            data = [input_line(i, rng) for i in range(args.messages)]

            def feed() -> None:
                nonlocal fed
                assert process.stdin is not None
                for line in data:
                    process.stdin.write(line)
                    fed += 1
                process.stdin.close()

            time.sleep(1.5)  # start-up and connect
            idle = rss_mib(process.pid)
            feeder = threading.Thread(target=feed)
            feeder.start()
            peak, most, rss_at_most = 0.0, 0, 0.0
            while process.poll() is None:
                rss = rss_mib(process.pid)
                decided = out.read_bytes().count(b"\n") if out.exists() else 0
                # The pipe itself holds at most 64 KiB of lines: an upper bound, about 600 high.
                waiting = fed - decided
                peak = max(peak, rss)
                if waiting > most:
                    most, rss_at_most = waiting, rss
                time.sleep(SAMPLE_EVERY)
            feeder.join()
            decided = out.read_bytes().count(b"\n")
        finally:
            sandbox.stop()
    print(f"\n{args.messages} messages, replies held {SANDBOX_LATENCY_MS} ms, window "
          f"{args.window}; {decided} decided\n")
    print(f"RSS idle (connected): {idle:.0f} MiB")
    print(f"RSS with {most} messages in flight (fed minus decided): {rss_at_most:.0f} MiB")
    print(f"RSS peak: {peak:.0f} MiB")


def long_run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        data, config = tmp / "input.jsonl", tmp / "noop.toml"
        rng = random.Random(3)
        with data.open("wb") as f:
            for i in range(args.messages):
                f.write(input_line(i, rng))
        size = data.stat().st_size
        config.write_text(NO_OP.format(out="/dev/null"))
        samples: list[tuple[float, float]] = []  # (share of the input read, RSS MiB)
        start = time.perf_counter()
        with data.open("rb") as stdin:
            process = subprocess.Popen(chatmod(config), stdin=stdin)
            fdinfo = Path(f"/proc/{process.pid}/fdinfo/0")
            while process.poll() is None:
                try:
                    position = int(fdinfo.read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    break
                samples.append((position / size, rss_mib(process.pid)))
                time.sleep(SAMPLE_EVERY * 10)
            process.wait()
        elapsed = time.perf_counter() - start
    print(f"\n{args.messages} messages in {elapsed:.0f} s (no-op pipeline)\n")
    print("| input read | RSS MiB |\n| ---: | ---: |")
    for mark in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
        share, rss = min(samples, key=lambda s: abs(s[0] - mark))
        print(f"| {share:.0%} | {rss:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("latency")
    one.add_argument("--rate", type=float, default=1000.0)
    one.add_argument("--seconds", type=float, default=10.0)
    one.set_defaults(run=latency)
    two = commands.add_parser("in-flight")
    two.add_argument("--window", type=int, default=10_000)
    two.add_argument("--messages", type=int, default=40_000)
    two.set_defaults(run=in_flight)
    three = commands.add_parser("long")
    three.add_argument("--messages", type=int, default=1_000_000)
    three.set_defaults(run=long_run)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
