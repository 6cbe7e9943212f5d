"""What chatmod adds in latency, and its memory with many messages in flight and over time.

    .venv/bin/python bench/footprint.py latency [--rate 1000] [--seconds 10] [--repeat 3]
        [--realtime] [--before PYTHON] [--worst 5]
    .venv/bin/python bench/footprint.py in-flight [--window 10000] [--messages 40000]
    .venv/bin/python bench/footprint.py long [--messages 1000000]

- latency: lines written to stdin at ``--rate`` per second, each timed from its write until
  its decision line is read from stdout; through a plain Python loop (read, parse, write a
  decision line, flush) and through ``chatmod run`` (stdin jsonl -> wordlist engine with
  empty lists, which answers at once -> jsonl sink on stdout). Both pay the same pipes and
  the same driver, so chatmod's percentile minus the plain loop's, in the same round, is
  what chatmod adds. Each process is warmed up first (until a line comes back, then 1 s at
  the rate, not counted); the measured process runs on CPU 1, the driver (one thread, one
  ``select``) on CPU 0; rounds interleave the runs (the order reversed every other round)
  and the spread over rounds is reported. ``--realtime`` runs the driver and the subjects
  SCHED_FIFO, so that other work on a shared machine does not preempt them. ``--before``
  adds the chatmod of another interpreter (an export of main with its own venv) to every
  round. chatmod runs with a garbage collector trace: the slowest messages of each run are
  listed with the collections that overlapped them.
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
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

WORDS = ("hello", "gg", "nice", "play", "lol", "what", "a", "great", "idea", "pizza", "stream",
         "you", "are", "the", "best", "worst", "fun", "again", "team", "win", "lose")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
SAMPLE_EVERY = 0.05
SANDBOX_LATENCY_MS = 3000
KEY = "bench-footprint-key"
SUBJECT_CPU, DRIVER_CPU = "1", 0  # as bench/vs_node.py: the measured process on its own CPU
# --realtime: above every ordinary process (the kernel still keeps 5% of each second for them).
REALTIME_PRIORITY = 20
WARM_UP_SECONDS = 1.0
START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 30.0

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


def input_line(i: int, rng: random.Random, key: str | None = None) -> bytes:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14)))
    return orjson.dumps({"id": key or f"m-{i}", "text": text, "author": f"user{i % 500}",
                         "channel": f"#room{i % 7}"}, option=orjson.OPT_APPEND_NEWLINE)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def pinned(cpu: str, command: list[str], *, realtime: bool = False) -> list[str]:
    """``command`` on ``cpu`` (taskset); with ``realtime``, also in the SCHED_FIFO class
    (chrt), ahead of every ordinary process on that CPU."""
    if realtime:
        command = ["chrt", "-f", str(REALTIME_PRIORITY), *command]
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") else command


@dataclass
class Paced:
    """One paced run: each measured message's send time and latency, and the subject's GC
    pauses (perf_counter seconds: CLOCK_MONOTONIC, the same clock in both processes)."""

    name: str
    sent_at: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    gc_pauses: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, gen

    def at(self, fraction: float) -> float:
        return percentile(self.latency_ms, fraction)

    def worst(self, count: int) -> list[tuple[float, float]]:
        """The ``count`` slowest messages: (latency ms, send time)."""
        return sorted(zip(self.latency_ms, self.sent_at, strict=True), reverse=True)[:count]

    def collections(self) -> str:
        """The collections while measured messages were in flight, by generation."""
        first, last = self.sent_at[0], max(
            s + ms / 1000 for s, ms in zip(self.sent_at, self.latency_ms, strict=True))
        parts = []
        for generation in range(3):
            took = [(b - a) * 1000 for a, b, g in self.gc_pauses
                    if g == generation and first <= a <= last]
            if took:
                parts.append(f"gen{generation} x{len(took)} (mean {sum(took) / len(took):.3f}, "
                             f"max {max(took):.3f} ms)")
        return "collections: " + (", ".join(parts) or "none")

    def pauses_during(self, start: float, latency_ms: float) -> list[tuple[float, float, int]]:
        end = start + latency_ms / 1000
        return [p for p in self.gc_pauses if p[0] < end and p[1] > start]


def paced_run(name: str, command: list[str], rate: float, seconds: float, *,
              trace: Path | None = None, realtime: bool = False) -> Paced:
    """Lines written to ``command``'s stdin at ``rate`` per second, each timed from its write
    to the moment its decision line is read from stdout.

    One thread, one ``select``: the reply is timestamped as the wait returns, without a
    reader thread to wake (which would add the driver's own GIL hand-off to every figure).
    The subject is warmed up first (until a line comes back, then :data:`WARM_UP_SECONDS` at
    the rate, not counted), so start-up and first-call costs are not measured.
    """
    env = {**os.environ, "CHATMOD_BENCH_GC_TRACE": str(trace)} if trace else None
    process = subprocess.Popen(pinned(SUBJECT_CPU, command, realtime=realtime),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
    assert process.stdin is not None
    assert process.stdout is not None
    stdin, stdout = process.stdin.fileno(), process.stdout.fileno()
    os.set_blocking(stdout, False)
    sent: dict[bytes, float] = {}
    result = Paced(name)
    rest = b""

    def receive(timeout: float) -> bool:
        """Wait at most ``timeout`` s for decision lines; False at end of output."""
        nonlocal rest
        readable, _, _ = select.select([stdout], [], [], timeout)  # microseconds, not ms
        if not readable:
            return True
        received = time.perf_counter()
        data = os.read(stdout, 1 << 16)
        if not data:
            return False
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            key = orjson.loads(line)["id"].encode()
            started = sent.pop(key, None)
            if started is not None and key.startswith(b"m-"):
                result.sent_at.append(started)
                result.latency_ms.append((received - started) * 1000)
        return True

    def send(key: str, line: bytes) -> None:
        sent[key.encode()] = time.perf_counter()
        try:
            os.write(stdin, line)
        except BrokenPipeError:
            raise SystemExit(f"{name}: exited with status {process.wait()}") from None

    rng = random.Random(1)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        probe = 0
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: no decision line within {START_TIMEOUT:g} s")
            send(f"w-{probe}", input_line(probe, rng, f"w-{probe}"))
            probe += 1
            receive(0.05)
            if len(sent) < probe:  # a probe came back: the subject is up
                break
        warm = int(rate * WARM_UP_SECONDS)
        count = int(rate * seconds)
        lines = [(f"w-{probe + i}", input_line(i, rng, f"w-{probe + i}")) for i in range(warm)]
        lines += [(f"m-{i}", input_line(i, rng)) for i in range(count)]
        start = time.perf_counter()
        for i, (key, line) in enumerate(lines):
            while (delay := start + i / rate - time.perf_counter()) > 0:
                receive(delay)
            send(key, line)
        end = time.monotonic() + DRAIN_TIMEOUT
        while len(result.latency_ms) < count and time.monotonic() < end:
            if not receive(0.1):
                break
        process.stdin.close()
        while receive(1.0) and process.poll() is None:
            pass
        process.wait(timeout=DRAIN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if len(result.latency_ms) != count:
        raise SystemExit(f"{name}: {len(result.latency_ms)} of {count} lines came back")
    if trace is not None and trace.exists():
        result.gc_pauses = [(a, b, g) for a, b, g in orjson.loads(trace.read_bytes())]
    return result


# Run as ``python -c GC_TRACED <chatmod args>``: chatmod with every collection's start and
# end recorded (perf_counter) to $CHATMOD_BENCH_GC_TRACE at exit.
GC_TRACED = r"""
import atexit, gc, os, sys, time, orjson
pauses, started = [], [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses.append((started[0], time.perf_counter(), info["generation"]))
gc.callbacks.append(on_gc)
atexit.register(lambda: open(os.environ["CHATMOD_BENCH_GC_TRACE"], "wb").write(
    orjson.dumps(pauses)))
from chatmod.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

PERCENTILES = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9"))


def latency(args: argparse.Namespace) -> None:
    """Interleaved rounds of the plain loop and chatmod (and the ``--before`` interpreter's
    chatmod), each pinned to the same CPU; per round, chatmod's percentile minus the plain
    loop's is what chatmod added."""
    os.sched_setaffinity(0, {DRIVER_CPU})
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    subjects = [("chatmod", sys.executable)]
    if args.before:
        subjects.insert(0, ("before", args.before))
    rounds: list[dict[str, Paced]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        config = tmp / "noop.toml"
        config.write_text(NO_OP.format(out="-"))
        for number in range(args.repeat):
            runs = [("plain", [sys.executable, "-c", PLAIN_LOOP], None)]
            runs += [(name, [python, "-c", GC_TRACED, "run", "-c", str(config)],
                      tmp / f"gc-{name}-{number}.json") for name, python in subjects]
            if number % 2:  # interleaved: neither goes first every time
                runs.reverse()
            rounds.append({name: paced_run(name, command, args.rate, args.seconds, trace=trace,
                                     realtime=args.realtime)
                           for name, command, trace in runs})
    names = [name for name, _ in subjects]
    print(f"\nat {args.rate:g} msgs/s, {args.seconds:g} s per run, {args.repeat} interleaved "
          f"rounds; latency in ms from a line written to stdin to its line read from stdout; "
          f"subjects pinned to CPU {SUBJECT_CPU}, the driver to CPU {DRIVER_CPU}; load average "
          f"{os.getloadavg()[0]:.1f}"
          f"{'; driver and subjects SCHED_FIFO' if args.realtime else ''}\n")
    header = " | ".join(label for _, label in PERCENTILES)
    print(f"| round | run | {header} | max |\n| --- | --- |" + " ---: |" * (len(PERCENTILES) + 1))
    for number, runs in enumerate(rounds, 1):
        for name in ("plain", *names):
            run = runs[name]
            cells = " | ".join(f"{run.at(f):.3f}" for f, _ in PERCENTILES)
            print(f"| {number} | {name} | {cells} | {max(run.latency_ms):.3f} |")
        for name in names:
            cells = " | ".join(f"{runs[name].at(f) - runs['plain'].at(f):+.3f}"
                               for f, _ in PERCENTILES)
            print(f"| {number} | added by {name} | {cells} | |")
    print("\nadded by chatmod over the rounds (min .. median .. max of the per-round "
          "differences):\n")
    print("| run | " + header + " |\n| --- |" + " ---: |" * len(PERCENTILES))
    for name in names:
        cells = []
        for fraction, _ in PERCENTILES:
            added = sorted(r[name].at(fraction) - r["plain"].at(fraction) for r in rounds)
            cells.append(f"{added[0]:.3f} .. {added[len(added) // 2]:.3f} .. {added[-1]:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nthe slowest messages of each chatmod run, and the collections that overlapped them:")
    for name in names:
        for number, runs in enumerate(rounds, 1):
            run = runs[name]
            print(f"\n{name}, round {number}: {run.collections()} (plain loop's max "
                  f"{max(runs['plain'].latency_ms):.3f} ms)")
            for latency_ms, start in run.worst(args.worst):
                pauses = run.pauses_during(start, latency_ms)
                causes = ", ".join(f"gen{g} collection {(b - a) * 1000:.3f} ms"
                                   for a, b, g in pauses) or "no collection"
                print(f"  {latency_ms:8.3f} ms: {causes}")


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
    one.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    one.add_argument("--worst", type=int, default=5, help="slowest messages shown per run")
    one.add_argument("--before", metavar="PYTHON",
                     help="also time the chatmod of this interpreter (e.g. an export of main "
                          "with its own venv), interleaved")
    one.add_argument("--realtime", action="store_true",
                     help="run the driver and the subjects SCHED_FIFO (needs root or "
                          "CAP_SYS_NICE): other work on the machine no longer preempts them")
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
