"""chatmod against the Chatsight sandbox over loopback, next to a bare websocket client.

    .venv/bin/python bench/chatsight.py [--messages 20000] [--window 256] [--rate 1000]

One run measures, with the sandbox in its own process (word-list verdicts, its lean path):

1. throughput: a bare trio-websocket loop (bench/bare_ws_client.py: send, match references,
   nothing else) and ``chatmod run`` (stdin jsonl -> chatsight ws -> jsonl file), both with
   at most ``--window`` requests in flight; the daemon's start-up is timed on empty input and
   subtracted. The ratio daemon / bare is the figure that matters.
2. latency at a fixed rate: the bare loop's round trip, and the daemon's end to end (a line
   written to its stdin until its decision line is read from its stdout); the difference is
   what chatmod adds.

For each run the sandbox's CPU share (CPU seconds / wall seconds) shows it was not the
bottleneck.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
KEY = "bench-sandbox-key"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

DAEMON_CONFIG = """
[daemon]
stats_interval = 0
log_level = "warning"
concurrency = {window}
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class SandboxProcess:
    def __init__(self, tmp: Path) -> None:
        config = tmp / "sandbox.toml"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatmod", "sandbox", "--ws-port", "0", "--http-port", "0",
             "--verdicts", "wordlist", "--write-config", str(config)],
            env={**os.environ, "CHATSIGHT_API_KEY": KEY}, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not config.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the sandbox did not start")
            time.sleep(0.05)
        engine = tomllib.loads(config.read_text())["engines"]["chatsight"]
        self.ws_url, self.http_url = engine["ws_url"], engine["http_url"]

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def bare(sandbox: SandboxProcess, *args: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, str(HERE / "bare_ws_client.py"), sandbox.ws_url, KEY, *args],
        capture_output=True, check=True, timeout=600,
    ).stdout
    result: dict[str, float] = orjson.loads(output)
    return result


def daemon_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "chatmod", "run", "-c", str(config)]


def timed_daemon(config: Path, data: Path) -> float:
    env = {**os.environ, "CHATSIGHT_API_KEY": KEY}
    with data.open("rb") as stdin:
        start = time.perf_counter()
        subprocess.run(daemon_command(config), stdin=stdin, env=env, check=True, timeout=600)
    return time.perf_counter() - start


def daemon_latency(config: Path, rate: float, seconds: float) -> dict[str, float]:
    count = int(rate * seconds)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    process = subprocess.Popen(daemon_command(config), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env={**os.environ,
                                                            "CHATSIGHT_API_KEY": KEY})
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
    time.sleep(1.0)  # let it connect
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        line_id = f"m-{i}"
        sent[line_id] = time.perf_counter()
        process.stdin.write(orjson.dumps({"id": line_id, "text": f"hello there number {i}"})
                            + b"\n")
        process.stdin.flush()
    process.stdin.close()
    process.wait(timeout=60)
    reader.join()
    latencies.sort()
    return {"p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        sandbox = SandboxProcess(tmp)
        try:
            data, empty, out = tmp / "in.jsonl", tmp / "empty.jsonl", tmp / "out.jsonl"
            data.write_bytes(b"".join(
                orjson.dumps({"id": f"m-{i}", "text": f"hello there number {i}"}) + b"\n"
                for i in range(args.messages)))
            empty.write_bytes(b"")
            config = tmp / "daemon.toml"
            config.write_text(DAEMON_CONFIG.format(
                window=args.window, ws_url=sandbox.ws_url, http_url=sandbox.http_url, out=out))

            cpu0, wall0 = sandbox.cpu(), time.perf_counter()
            bare_rate = bare(sandbox, "throughput", str(args.messages),
                             str(args.window))["msgs_per_s"]
            bare_share = (sandbox.cpu() - cpu0) / (time.perf_counter() - wall0)

            startup = min(timed_daemon(config, empty) for _ in range(2))
            cpu0 = sandbox.cpu()
            wall = timed_daemon(config, data)
            daemon_share = (sandbox.cpu() - cpu0) / wall
            written = sum(1 for _ in out.open("rb"))
            if written != args.messages:
                raise SystemExit(f"daemon wrote {written} decisions for {args.messages} lines")
            daemon_rate = args.messages / (wall - startup)

            bare_latency = bare(sandbox, "rate", str(args.rate), str(args.seconds))
            config.write_text(DAEMON_CONFIG.format(
                window=args.window, ws_url=sandbox.ws_url, http_url=sandbox.http_url, out="-"))
            latency = daemon_latency(config, args.rate, args.seconds)
        finally:
            sandbox.stop()

    print(f"\n{args.messages} messages, window {args.window}, {os.cpu_count()} CPUs; "
          "sandbox in its own process (word-list verdicts)\n")
    print("| run | msgs/s | vs bare loop | sandbox CPU share |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| bare trio-websocket loop | {bare_rate:,.0f} | 1.00x | {bare_share:.0%} |")
    print(f"| chatmod: stdin jsonl -> chatsight ws -> jsonl file | {daemon_rate:,.0f} | "
          f"{daemon_rate / bare_rate:.2f}x | {daemon_share:.0%} |")
    print(f"\nlatency at {args.rate:g} msgs/s for {args.seconds:g} s\n")
    print("| run | p50 ms | p99 ms |")
    print("| --- | ---: | ---: |")
    print(f"| bare loop round trip | {bare_latency['p50_ms']:.2f} | {bare_latency['p99_ms']:.2f} |")
    print(f"| chatmod end to end (stdin line -> decision line) | {latency['p50_ms']:.2f} | "
          f"{latency['p99_ms']:.2f} |")
    print(f"| added by chatmod | {latency['p50_ms'] - bare_latency['p50_ms']:.2f} | "
          f"{latency['p99_ms'] - bare_latency['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
