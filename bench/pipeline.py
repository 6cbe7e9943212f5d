"""Pipeline overhead and local-engine throughput, measured in one run.

    .venv/bin/python bench/pipeline.py [--messages 50000] [--repeat 3] [--skip-local]

Rows:
- plain loop: a Python process that reads the input lines, parses each, and writes a
  decision-shaped JSON line: the floor any pipeline pays for the same I/O.
- chatmod (no-op engine): ``chatmod run`` on the same lines, stdin jsonl -> wordlist engine
  with empty lists -> jsonl file sink. Its ratio to the plain loop is the pipeline's cost.
- chatmod (local engine): the same run with the embedded model.
- local engine alone: in-process, the same messages in lists of 64 (``moderate_many``), 8
  lists at once, best of ``--repeat`` runs too; the daemon runs have the verdict cache off,
  as the engine alone has none. Its CPU a message is this process's (the model's thread
  included) while it scores, the model's load not counted.

Rates exclude process start-up (a run on empty input is timed and subtracted). Each row is the
best of ``--repeat`` runs; the machine is noisy, so compare the ratios, not the absolute rates.
CPU per message (the process's user + system time, start-up's subtracted) varies less with
the load than wall time: the last column is the plain loop's CPU per message over the row's.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio

REPO = Path(__file__).resolve().parent.parent
WORDS = ("hello", "gg", "nice", "play", "lol", "what", "a", "great", "idea", "pizza", "stream",
         "you", "are", "the", "best", "worst", "idiot", "fun", "again", "team", "win", "lose")

# A run must take this long beyond start-up for its rate to mean anything: start-up itself
# varies by milliseconds (compare rates from runs of a second or more).
MIN_MEASURED_SECONDS = 0.005

# The local engine alone: lists of this many messages, this many lists asked at once.
ENGINE_ALONE_LIST = 64
ENGINE_ALONE_CALLERS = 8

PLAIN_LOOP = r"""
import sys, time, orjson
out = open(sys.argv[1], "wb")
for n, raw in enumerate(sys.stdin.buffer):
    if not raw.strip():
        continue
    m = orjson.loads(raw)
    out.write(orjson.dumps({
        "id": m.get("id") or str(n), "source": "stdin", "channel": m.get("channel"),
        "author": m.get("author"), "verdict": "pass", "score": 0.0, "action": "none",
        "engine": "plain", "route": "local", "latency_ms": 0.0, "ts": time.time(),
        "scores": {}, "text": m["text"]}, option=orjson.OPT_APPEND_NEWLINE))
out.close()
"""

# The verdict cache is off: the engine alone has none, so with it the daemon would skip
# the engine for repeated texts and look faster than the engine it runs.
CONFIG = """
[daemon]
stats_interval = 0
log_level = "warning"
[cache]
enabled = false
[engine]
primary = "{engine}"
[[sources]]
type = "stdin"
format = "jsonl"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


def make_input(path: Path, count: int) -> None:
    rng = random.Random(42)
    with path.open("wb") as f:
        for i in range(count):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14)))
            f.write(orjson.dumps({"id": f"m-{i}", "text": text, "author": f"user{i % 500}",
                                  "channel": f"#room{i % 7}"}, option=orjson.OPT_APPEND_NEWLINE))


def timed_run(command: list[str], input_path: Path) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds (user + system) of one process reading
    ``input_path`` on stdin."""
    with input_path.open("rb") as stdin:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(command)}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def best_rate(command: list[str], data: Path, empty: Path, count: int, repeat: int,
              output: Path) -> tuple[float, int, float]:
    """Messages a second, peak RSS (KiB) and CPU microseconds a message, start-up's
    subtracted (the best of ``repeat`` runs each)."""
    startups = [timed_run(command, empty) for _ in range(repeat)]
    runs = []
    for _ in range(repeat):
        output.unlink(missing_ok=True)
        runs.append(timed_run(command, data))
        written = sum(1 for _ in output.open("rb"))
        if written != count:
            raise SystemExit(f"{' '.join(command)} wrote {written} lines, expected {count}")
    elapsed = min(r[0] for r in runs) - min(r[0] for r in startups)
    cpu = min(r[2] for r in runs) - min(r[2] for r in startups)
    if elapsed < MIN_MEASURED_SECONDS or cpu < MIN_MEASURED_SECONDS:
        raise SystemExit(f"{count} messages took {elapsed * 1000:.0f} ms beyond start-up: too "
                         f"few to measure, give --messages more")
    return count / elapsed, max(r[1] for r in runs), cpu / count * 1e6


async def local_engine_rate(data: Path, count: int) -> tuple[float, float]:
    """The embedded engine's rate in-process on the first ``count`` lines of ``data`` (the
    same messages the daemon reads), asked in lists of :data:`ENGINE_ALONE_LIST`; and its CPU
    microseconds a message (this process's, model thread included), the model's load not
    counted."""
    from chatmod.core.model import Message
    from chatmod.plugins.local import LocalConfig, LocalEngine

    engine = LocalEngine("local", LocalConfig())
    with data.open("rb") as lines:
        records = [orjson.loads(line) for _, line in zip(range(count), lines, strict=False)]
    messages = [Message(id=r["id"], text=r["text"], source="bench", author=r["author"],
                        channel=r["channel"]) for r in records]
    # Lists, as the pipeline hands the engine its batches (moderate_many, the engine's faster
    # form), from several callers at once so the engine can merge them into model batches.
    lists = [messages[start:start + ENGINE_ALONE_LIST] for start in
             range(0, len(messages), ENGINE_ALONE_LIST)]
    send, receive = trio.open_memory_channel[list[Message]](0)

    async def caller() -> None:
        async for part in receive:
            await engine.moderate_many(part)

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        start, cpu_start = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as callers:
            for _ in range(ENGINE_ALONE_CALLERS):
                callers.start_soon(caller)
            async with send:
                for part in lists:
                    await send.send(part)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        nursery.cancel_scope.cancel()
    return len(messages) / elapsed, cpu / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-local", action="store_true",
                        help="leave out the local engine rows (the pipeline's own cost only)")
    args = parser.parse_args()
    count = args.messages
    chatmod = [sys.executable, "-m", "chatmod", "run", "-c"]
    rows: list[tuple[str, float, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        data, empty, out = tmp / "input.jsonl", tmp / "empty.jsonl", tmp / "out.jsonl"
        make_input(data, count)
        empty.write_bytes(b"")
        rate, rss, cpu = best_rate([sys.executable, "-c", PLAIN_LOOP, str(out)], data, empty,
                                   count, args.repeat, out)
        rows.append(("plain loop (baseline)", rate, rss, cpu))
        for engine in ("wordlist", *(() if args.skip_local else ("local",))):
            config = tmp / f"{engine}.toml"
            config.write_text(CONFIG.format(engine=engine, out=out))
            rate, rss, cpu = best_rate([*chatmod, str(config)], data, empty, count,
                                       args.repeat, out)
            label = "no-op engine" if engine == "wordlist" else "local engine"
            rows.append((f"chatmod ({label})", rate, rss, cpu))
        # The engine alone on the same messages, as often as the daemon ran: a single run
        # of fewer messages (as this once was) moved the ratio by a fifth between runs.
        engine_runs = [] if args.skip_local else [
            trio.run(local_engine_rate, data, count) for _ in range(args.repeat)]
        engine_rate = max((rate for rate, _ in engine_runs), default=0.0)
        engine_cpu = min((cpu for _, cpu in engine_runs), default=0.0)
    baseline, baseline_cpu = rows[0][1], rows[0][3]
    print(f"\n{count} messages, best of {args.repeat}, {os.cpu_count()} CPUs\n")
    print(f"| {'run':<28} | {'msgs/s':>9} | {'vs plain loop':>13} | {'peak RSS':>9} | "
          f"{'CPU us/msg':>10} | {'CPU vs loop':>11} |")
    print(f"|{'-' * 30}|{'-' * 11}|{'-' * 15}|{'-' * 11}|{'-' * 12}|{'-' * 13}|")
    for label, rate, rss, cpu in rows:
        print(f"| {label:<28} | {rate:>9,.0f} | {rate / baseline:>12.2f}x | "
              f"{rss / 1024:>6.0f} MiB | {cpu:>10.1f} | {baseline_cpu / cpu:>10.2f}x |")
    if not args.skip_local:
        print(f"| {'local engine alone':<28} | {engine_rate:>9,.0f} | {'':>13} | {'':>9} | "
              f"{engine_cpu:>10.1f} | {'':>11} |")
        print(f"\nchatmod (local engine) vs the local engine alone: "
              f"{rows[-1][1] / engine_rate:.2f}x (CPU a message: "
              f"{engine_cpu / rows[-1][3]:.2f}x)")


if __name__ == "__main__":
    main()
