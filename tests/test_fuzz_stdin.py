"""End-to-end stdin fuzz: the real daemon fed random bytes must stay up, exit 0 at end of
input, and decide every valid line it read exactly once.

A short run is part of the suite; CHATMOD_FUZZ_SECONDS=60 runs longer, CHATMOD_FUZZ_SEED
picks the random stream (the seed is printed, so a failure can be replayed).
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import trio

from .helpers import chatmod_command, write_config

pytestmark = pytest.mark.slow

FUZZ_SECONDS = float(os.environ.get("CHATMOD_FUZZ_SECONDS", "3"))
FUZZ_SEED = int(os.environ.get("CHATMOD_FUZZ_SEED", "20261125"))
MAX_LINE_BYTES = 4096
# After the input ends: time for the daemon to decide what it read and exit.
EXIT_TIMEOUT = 120.0

CONFIG = """
[daemon]
drain_timeout = 60.0
stats_interval = 0

[engine]
primary = "wordlist"

[engines.wordlist]
delete = ["idiot"]
flag = ["pizza"]

[[sources]]
type = "stdin"
format = "{format}"
max_line_bytes = {max_line_bytes}

[[sinks]]
type = "jsonl"
path = "{path}"
"""

WORDS = ["hello", "pizza", "idiot", "caf\u00e9", "\u00fcber", "\U0001f600", "\x00", "\t",
         " ", "\u2028", "\\", '"', "\x1b[2J", "\ufffd"]


def fuzz_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))


@dataclass
class Feed:
    """The bytes sent and, counted apart from the daemon's own framing, what must come out."""

    fmt: str
    bytes_sent: int = 0
    lines: int = 0
    valid_ids: set[str] = field(default_factory=set)  # jsonl: the records that must be decided
    texts: collections.Counter[bytes] = field(default_factory=collections.Counter)
    _pending: bytes = b""
    _next_id: int = 0

    def new_id(self) -> str:
        self._next_id += 1
        return f"fuzz-{self._next_id}"

    def sent(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        *complete, self._pending = (self._pending + data).split(b"\n")
        for line in complete:
            self._count(line)

    def ended(self) -> None:
        if self._pending:
            self._count(self._pending)
        self._pending = b""

    def _count(self, line: bytes) -> None:
        self.lines += 1
        if self.fmt != "text" or len(line) > MAX_LINE_BYTES:
            return
        text = line.removesuffix(b"\r").decode("utf-8", errors="replace")
        if text.strip():
            self.texts[digest(text)] += 1


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()


def segments(rng: random.Random, feed: Feed) -> Iterator[bytes]:
    """Endless random input: binary, invalid UTF-8, huge lines, NULs, lone CRs, blank lines,
    and (on lines of their own) valid JSON records, some with invalid UTF-8 inside."""
    while True:
        kind = rng.randrange(10)
        if kind == 0:
            yield rng.randbytes(rng.randint(0, 3000))
        elif kind == 1:
            yield b"bad \xff\xfe\xc3(" + rng.randbytes(rng.randint(0, 40)) + b"\n"
        elif kind == 2:
            filler = rng.choice([b"A", b"\x00", b"\r", b"\xff", b"{"])
            over = rng.choice([1, rng.randint(2, 5000), rng.randint(2, 5000)])
            if rng.random() < 0.02:
                over = rng.randint(1_000_000, 4_000_000)  # many reads' worth, never held whole
            yield filler * (MAX_LINE_BYTES + over) + b"\n"
        elif kind == 3:
            yield b"\x00" * rng.randint(1, 50) + fuzz_text(rng).encode() + b"\r\r\x00\r\n"
        elif kind == 4:
            yield rng.choice([b"\n", b"\r\n", b"   \n", b"\t\r\n", b"\r", b"\r\r\r"])
        elif kind == 5:
            # Oversized but valid JSON: must be skipped, never decided.
            too_long = {"id": f"oversized-{rng.random()}", "text": "x" * MAX_LINE_BYTES}
            yield b"\n" + orjson.dumps(too_long) + b"\n"
        else:
            record_id = feed.new_id()
            record: dict[str, object] = {"id": record_id, "text": fuzz_text(rng)}
            if rng.random() < 0.3:
                record["channel"], record["author"] = "#fuzz", rng.choice(["a", "b", 7])
            line = orjson.dumps(record)
            if rng.random() < 0.2:  # invalid UTF-8 in the text: replaced, still decided
                line = line.replace(b'"text":"', b'"text":"\xff\xfe', 1)
            if feed.fmt == "jsonl":
                feed.valid_ids.add(record_id)
            yield b"\n" + line + rng.choice([b"\n", b"\r\n"])


async def feed_daemon(tmp_path: Path, fmt: str, seconds: float, seed: int) -> Feed:
    """Run the daemon on random input for ``seconds``, check it stayed up and exited 0."""
    out = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "fuzz.toml", CONFIG.format(
        format=fmt, max_line_bytes=MAX_LINE_BYTES, path=out))
    rng = random.Random(seed)
    feed = Feed(fmt)
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            chatmod_command("run", "-c", str(config)), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=stderr)
    assert process.stdin is not None
    try:
        with trio.fail_after(seconds + EXIT_TIMEOUT):
            stop_at = trio.current_time() + seconds
            pending = b""
            for segment in segments(rng, feed):
                pending += segment
                if len(pending) < 65536 and rng.random() < 0.8:
                    continue  # writes of every size, from a byte to many reads' worth
                cut = rng.randint(1, len(pending)) if pending else 0
                chunk, pending = pending[:cut], pending[cut:]
                await process.stdin.send_all(chunk)  # BrokenResourceError: the daemon died
                feed.sent(chunk)
                if trio.current_time() >= stop_at:
                    break
            if pending:
                await process.stdin.send_all(pending)
                feed.sent(pending)
            feed.ended()
            await process.stdin.aclose()
            returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(10):
                await process.wait()
    log = (tmp_path / "stderr.log").read_bytes()
    assert returncode == 0, f"seed {seed}: exit {returncode}\n{log[-3000:].decode(errors='replace')}"
    assert b"Traceback" not in log, f"seed {seed}"
    return feed


def read_decisions(tmp_path: Path) -> list[dict[str, object]]:
    with (tmp_path / "decisions.jsonl").open("rb") as lines:
        return [orjson.loads(line) for line in lines]


def report(fmt: str, seed: int, feed: Feed, decided: int) -> None:
    print(f"\nstdin fuzz ({fmt}, seed {seed}, {FUZZ_SECONDS:g} s): {feed.bytes_sent} bytes, "
          f"{feed.lines} lines fed, {decided} decisions")


async def test_random_jsonl_input_every_valid_record_decided_once(tmp_path: Path) -> None:
    feed = await feed_daemon(tmp_path, "jsonl", FUZZ_SECONDS, FUZZ_SEED)
    decisions = read_decisions(tmp_path)
    report("jsonl", FUZZ_SEED, feed, len(decisions))
    ids = collections.Counter(str(d["id"]) for d in decisions)
    assert feed.valid_ids, "the run fed no valid record"
    assert set(ids) == feed.valid_ids, f"seed {FUZZ_SEED}"
    assert max(ids.values()) == 1, f"seed {FUZZ_SEED}: a record decided twice"


async def test_random_text_input_every_line_decided_once(tmp_path: Path) -> None:
    feed = await feed_daemon(tmp_path, "text", FUZZ_SECONDS, FUZZ_SEED + 1)
    decisions = read_decisions(tmp_path)
    report("text", FUZZ_SEED + 1, feed, len(decisions))
    decided = collections.Counter(digest(str(d["text"])) for d in decisions)
    assert sum(feed.texts.values()) > 0, "the run fed no decidable line"
    assert decided == feed.texts, f"seed {FUZZ_SEED + 1}"
