"""Redis source -> local engine -> Redis sink, one daemon against two in one group.

    .venv/bin/python bench/redis.py [--entries 40000]

Starts its own redis-server on a free loopback port. The daemons start first and wait on an
empty stream; then the entries are written at once (``redis-cli --pipe``) and the clock runs
until every entry has a decision in the decision stream. The verdict cache is off (every text
differs anyway), so the embedded model judges each entry.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[daemon]
stats_interval = 0
log_level = "warning"
[cache]
enabled = false
[engine]
primary = "local"
[[sources]]
type = "redis"
port = {port}
stream = "chat"
group = "bench"
consumer = "{consumer}"
block = 0.2
[[sinks]]
type = "redis"
port = {port}
stream = "decisions"
"""
WORDS = ("hello", "gg", "nice", "play", "lol", "what", "great", "idea", "stream", "you",
         "are", "the", "best", "worst", "idiot", "fun", "again", "team", "win", "lose")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def resp(*parts: str) -> bytes:
    encoded = [p.encode() for p in parts]
    return b"".join([f"*{len(encoded)}\r\n".encode()]
                    + [b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded])


def cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def run(port: int, tmp: Path, daemons: int, entries: int) -> float:
    cli(port, "flushall")
    processes = []
    for i in range(daemons):
        config = tmp / f"d{i}.toml"
        config.write_text(CONFIG.format(port=port, consumer=f"d{i}"))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "chatmod", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
    time.sleep(4.0)  # imports and the model
    rng = random.Random(1)
    data = b"".join(
        resp("XADD", "chat", "*", "id", f"m-{i}", "text",
             " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))))
        for i in range(entries))
    start = time.perf_counter()
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=data, check=True,
                   capture_output=True)
    while int(cli(port, "xlen", "decisions")) < entries:
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    for process in processes:
        process.terminate()
        process.wait(timeout=20)
    return entries / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=40_000)
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("needs redis-server (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp_dir:
        redis = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", tmp_dir],
                                 stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            one = run(port, Path(tmp_dir), 1, args.entries)
            two = run(port, Path(tmp_dir), 2, args.entries)
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    print(f"\n{args.entries} entries, local engine, cache off\n")
    print("| daemons in the group | entries/s | vs one |")
    print("| ---: | ---: | ---: |")
    print(f"| 1 | {one:,.0f} | 1.00x |")
    print(f"| 2 | {two:,.0f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
