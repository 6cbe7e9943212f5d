"""``chatmod tail``: follow decision lines and print them readably.

    chatmod tail /var/log/chatmod/decisions.jsonl --action delete --action kick
    journalctl -u chatmod -o cat -f | chatmod tail

Follows a file like ``tail -F`` (from its end, across rotation and truncation) or reads
stdin; lines that are not decision lines (other log output) are skipped. A summary line
(rates per action, engine latency) is printed every ``--summary-every`` seconds and at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, TextIO

import orjson

from chatmod.plugins.log_sink import printable

POLL_INTERVAL = 0.2
COLORS = {"none": "2", "flag": "33", "delete": "31", "warn": "33", "kick": "35", "ban": "1;31"}
RESET = "\033[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-",
                        help="decisions file to follow (default: read stdin)")
    parser.add_argument("--action", action="append", default=[], help="only these actions")
    parser.add_argument("--channel", action="append", default=[])
    parser.add_argument("--author", action="append", default=[])
    parser.add_argument("--route", action="append", default=[])
    parser.add_argument("--from-start", action="store_true",
                        help="print the file's existing lines first")
    parser.add_argument("--no-color", action="store_true")
    parser.add_argument("--summary-every", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between summary lines; 0: only at the end")


def follow(path: str, from_start: bool) -> Iterator[bytes | None]:
    """Lines appended to ``path``; None when nothing came for a poll interval. Reopens the
    file when it is replaced (logrotate) or truncated."""
    file = None
    inode = None
    position = 0
    first = True
    buffer = b""
    while True:
        if file is None:
            try:
                file = open(path, "rb")  # noqa: SIM115 - kept open while following
            except FileNotFoundError:
                time.sleep(POLL_INTERVAL)
                yield None
                continue
            inode = os.fstat(file.fileno()).st_ino
            if first and not from_start:
                file.seek(0, os.SEEK_END)
            first = False
            position = file.tell()
        chunk = file.read(65536)
        if chunk:
            position += len(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            yield from lines
            continue
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != inode or current.st_size < position:
            file.close()  # rotated or truncated: read the new file from its start
            file, buffer = None, b""
            continue
        time.sleep(POLL_INTERVAL)
        yield None


class Printer:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.color = (not args.no_color and out.isatty() and not os.environ.get("NO_COLOR"))
        self.actions: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.started = time.monotonic()
        self.last_summary = self.started

    def wants(self, decision: dict[str, Any]) -> bool:
        args = self.args
        return all(not allowed or decision.get(key) in allowed for key, allowed in (
            ("action", args.action), ("channel", args.channel), ("author", args.author),
            ("route", args.route)))

    def paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}{RESET}" if self.color else text

    def show(self, decision: dict[str, Any]) -> None:
        self.actions[str(decision.get("action"))] += 1
        latency = decision.get("latency_ms")
        if isinstance(latency, (int, float)):
            self.latencies.append(float(latency))
            del self.latencies[:-4096]
        action = str(decision.get("action"))
        score = decision.get("score")
        parts = [
            str(decision.get("ts", ""))[11:23],
            self.paint(COLORS.get(action, "36"), f"{action:<6}"),
            f"{decision.get('verdict')}" + (f" {score:.2f}" if isinstance(score, float) else ""),
        ]
        if decision.get("channel"):
            parts.append(str(decision["channel"]))
        if decision.get("author"):
            parts.append(f"<{decision['author']}>")
        if "text" in decision:
            parts.append(f'"{printable(str(decision["text"]), 100)}"')
        shown_latency = f"{latency:.1f} ms" if isinstance(latency, (int, float)) else "? ms"
        shadow = ", shadow" if decision.get("shadow") else ""
        parts.append(self.paint("2", f"({decision.get('engine')}/{decision.get('route')}, "
                                     f"{shown_latency}{shadow})"))
        print(" ".join(parts), file=self.out, flush=True)

    def maybe_summary(self, final: bool = False) -> None:
        now = time.monotonic()
        every = self.args.summary_every
        if not final and (every <= 0 or now - self.last_summary < every):
            return
        self.last_summary = now
        elapsed = max(now - self.started, 1e-9)
        rates = ", ".join(f"{action} {n / elapsed:.1f}/s" for action, n in
                          sorted(self.actions.items())) or "no decisions"
        ordered = sorted(self.latencies)
        latency = (f"; engine latency p50 {ordered[len(ordered) // 2]:.1f} ms, "
                   f"p99 {ordered[int(len(ordered) * 0.99)]:.1f} ms" if ordered else "")
        total = sum(self.actions.values())
        print(self.paint("1", f"-- {total} decisions: {rates}{latency}"), file=self.out,
              flush=True)


def run(args: argparse.Namespace) -> int:
    printer = Printer(args, sys.stdout)
    lines: Iterator[bytes | None] = (
        iter(sys.stdin.buffer) if args.file == "-" else follow(args.file, args.from_start))
    try:
        for line in lines:
            if line is not None:
                decision = _decision(line)
                if decision is not None and printer.wants(decision):
                    printer.show(decision)
            printer.maybe_summary()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    printer.maybe_summary(final=True)
    return 0


def _decision(line: bytes) -> dict[str, Any] | None:
    start = line.find(b"{")  # journal lines may carry a prefix before the JSON
    if start < 0:
        return None
    try:
        record = orjson.loads(line[start:])
    except orjson.JSONDecodeError:
        return None
    if isinstance(record, dict) and "action" in record and "verdict" in record:
        return record
    return None
