"""``chatmod tail``: follow decision lines and print them readably.

    chatmod tail /var/log/chatmod/decisions.jsonl --action delete --action kick
    journalctl -u chatmod -o cat -f | chatmod tail

Follows a file like ``tail -F`` (from its end, across rotation and truncation) or reads
stdin; lines that are not decision lines (other log output) are skipped. A file that is not
there is an error (exit 1), unless ``--retry`` says to wait for it. ``--no-follow`` prints the
file's lines and its summary, then exits.

A summary line (decisions per action, their rate, engine latency) is printed every
``--summary-every`` seconds when something new came, and at the end. Rates are per second of
the decisions' own time span (their ``ts``), not of the time spent reading them: a finished
file read in a second still shows the rates it had.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from chatmod.config.sections import DEFAULT_ACTIONS
from chatmod.core.text import printable

POLL_INTERVAL = 0.2
MAX_LATENCIES = 4096  # the most recent, for the percentiles
MISSING = "no such file"
FIELD_LIMIT = 200  # characters of a channel, author or verdict shown at most
COLORS = {"none": "2", "flag": "33", "delete": "31", "warn": "33", "kick": "35", "ban": "1;31"}
RESET = "\033[0m"
# The actions the default policy and the ladder's sinks produce; a config may map a verdict
# to another, so an unknown ``--action`` is only warned about.
KNOWN_ACTIONS = frozenset({*DEFAULT_ACTIONS.values(), *COLORS})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-",
                        help="decisions file to follow (default: read stdin)")
    parser.add_argument("--action", action="append", default=[], help="only these actions")
    parser.add_argument("--channel", action="append", default=[])
    parser.add_argument("--author", action="append", default=[])
    parser.add_argument("--route", action="append", default=[])
    parser.add_argument("--from-start", action="store_true",
                        help="print the file's existing lines first")
    parser.add_argument("--retry", action="store_true",
                        help="wait for a file that is not there yet (else: exit 1)")
    parser.add_argument("--no-follow", action="store_true",
                        help="print the file's lines and a summary, then exit")
    parser.add_argument("--no-color", action="store_true")
    parser.add_argument("--summary-every", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between summary lines; 0: only at the end")


def follow(path: str, from_start: bool) -> Iterator[bytes | None]:
    """Lines appended to ``path``; None when nothing came for a poll interval. Reopens the
    file when it is replaced (logrotate) or truncated; waits while it is missing, and reads
    a file that appears from its start."""
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
                first = False  # what appears later is new: all of it is shown
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


def read_lines(path: str) -> Iterator[bytes]:
    """The lines of ``path`` as it is now (``--no-follow``)."""
    with open(path, "rb") as file:
        for line in file:
            yield line.rstrip(b"\n")


class Summary:
    """Decisions per action, their time span (by ``ts``) and engine latencies; no I/O."""

    def __init__(self) -> None:
        self.actions: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.actions.values())

    def add(self, decision: dict[str, Any]) -> None:
        self.actions[_shown(decision.get("action"))] += 1
        latency = decision.get("latency_ms")
        if isinstance(latency, (int, float)) and not isinstance(latency, bool):
            self.latencies.append(float(latency))
            del self.latencies[:-MAX_LATENCIES]
        when = _timestamp(decision.get("ts"))
        if when is not None:
            self.first_ts = when if self.first_ts is None else min(self.first_ts, when)
            self.last_ts = when if self.last_ts is None else max(self.last_ts, when)

    def span(self) -> float:
        """Seconds from the first decision to the last, by their own timestamps."""
        if self.first_ts is None or self.last_ts is None:
            return 0.0
        return (self.last_ts - self.first_ts).total_seconds()

    def line(self) -> str:
        """``-- 120 decisions over 60.0 s: delete 12 (0.20/s), none 108 (1.80/s); ...``"""
        if not self.actions:
            return "-- no decisions"
        span = self.span()
        counts = ", ".join(
            f"{action} {n}" + (f" ({n / span:.2f}/s)" if span > 0 else "")
            for action, n in sorted(self.actions.items()))
        over = f" over {span:.1f} s" if span > 0 else ""
        ordered = sorted(self.latencies)
        latency = (f"; engine latency p50 {ordered[len(ordered) // 2]:.1f} ms, "
                   f"p99 {ordered[int(len(ordered) * 0.99)]:.1f} ms" if ordered else "")
        return f"-- {self.total} decisions{over}: {counts}{latency}"


class Printer:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.color = (not args.no_color and out.isatty() and not os.environ.get("NO_COLOR"))
        self.summary = Summary()
        self.last_summary = time.monotonic()
        self.summarised: int | None = None  # decisions counted in the last summary printed

    def wants(self, decision: dict[str, Any]) -> bool:
        args = self.args
        return all(not allowed or decision.get(key) in allowed for key, allowed in (
            ("action", args.action), ("channel", args.channel), ("author", args.author),
            ("route", args.route)))

    def paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}{RESET}" if self.color else text

    def show(self, decision: dict[str, Any]) -> None:
        self.summary.add(decision)
        latency = decision.get("latency_ms")
        action = _shown(decision.get("action"))
        score = decision.get("score")
        parts = [
            _shown(decision.get("ts", ""))[11:23],
            self.paint(COLORS.get(action, "36"), f"{ladder_text(decision):<6}"),
            _shown(decision.get("verdict"))
            + (f" {score:.2f}" if isinstance(score, float) else ""),
        ]
        if decision.get("channel"):
            parts.append(_shown(decision["channel"]))
        if decision.get("author"):
            parts.append(f"<{_shown(decision['author'])}>")
        if "text" in decision:
            parts.append(f'"{_shown(decision["text"], 100)}"')
        shown_latency = f"{latency:.1f} ms" if isinstance(latency, (int, float)) else "? ms"
        shadow = ", shadow" if decision.get("shadow") else ""
        parts.append(self.paint("2", f"({_shown(decision.get('engine'))}/"
                                     f"{_shown(decision.get('route'))}, "
                                     f"{shown_latency}{shadow})"))
        print(" ".join(parts), file=self.out, flush=True)

    def maybe_summary(self, final: bool = False) -> None:
        """The summary, every ``--summary-every`` seconds and at the end, unless nothing came
        since the last one printed (an idle tail stays quiet)."""
        now = time.monotonic()
        every = self.args.summary_every
        if not final and (every <= 0 or now - self.last_summary < every):
            return
        self.last_summary = now
        if self.summarised == self.summary.total:
            return
        self.summarised = self.summary.total
        print(self.paint("1", self.summary.line()), file=self.out, flush=True)


def ladder_text(decision: dict[str, Any]) -> str:
    """The action and what the ladder did: ``delete→timeout 1h (strike 2)``, ``none exempt``,
    ``delete→ban (strike 3) repeated`` (a redelivery: the step was not taken again)."""
    text = _shown(decision.get("action"))
    step = decision.get("step")
    if isinstance(step, str) and step:
        text += f"→{_shown(step)}"
        strikes = decision.get("strikes")
        if isinstance(strikes, int) and not isinstance(strikes, bool):
            text += f" (strike {strikes})"
    if decision.get("exempt") is True:
        text += " exempt"
    if decision.get("repeated") is True:
        text += " repeated"
    return text


def unknown_action_warnings(actions: list[str]) -> list[str]:
    """One warning line per ``--action`` value no default policy produces (a typo, most
    likely); the tail still runs, since a config may map a verdict to its own action."""
    warnings = []
    for action in dict.fromkeys(actions):
        if action in KNOWN_ACTIONS:
            continue
        close = difflib.get_close_matches(action, sorted(KNOWN_ACTIONS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"chatmod: tail: warning: --action {_shown(action)} is not a known "
                        f"action ({', '.join(sorted(KNOWN_ACTIONS))}){hint}; only lines with "
                        "that action are shown")
    return warnings


def run(args: argparse.Namespace) -> int:
    """``chatmod tail``: 0 when done or interrupted, 1 when the file cannot be read."""
    for warning in unknown_action_warnings(args.action):
        print(warning, file=sys.stderr, flush=True)
    printer = Printer(args, sys.stdout)
    lines: Iterator[bytes | None]
    if args.file == "-":
        lines = iter(sys.stdin.buffer)
    else:
        problem = _unreadable(args.file)
        waits = args.retry and not args.no_follow and problem == MISSING
        if problem is not None and not waits:
            print(f"chatmod: tail: {args.file}: {problem}"
                  + (" (--retry waits for it)" if problem == MISSING else ""), file=sys.stderr)
            return 1
        if problem is not None:
            print(f"chatmod: tail: {args.file}: {problem}; waiting for it", file=sys.stderr,
                  flush=True)
        lines = (read_lines(args.file) if args.no_follow
                 else follow(args.file, args.from_start))
    # SIGTERM (systemd, a supervisor, kill) ends the tail as ^C does: with its summary.
    previous = signal.signal(signal.SIGTERM, _interrupt)
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
    except OSError as exc:  # e.g. --no-follow on a file removed since it was checked
        print(f"chatmod: tail: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    printer.maybe_summary(final=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _shown(value: object, limit: int = FIELD_LIMIT) -> str:
    """A decision's field for the terminal: every control character escaped (C1 too: some
    terminals take 0x9B as an escape sequence), cut to ``limit`` characters."""
    return printable(str(value), limit)


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be tailed, or None."""
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return MISSING
    except IsADirectoryError:
        return "is a directory"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Decision lines are UTC; one without an offset is read as UTC so all compare.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


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
