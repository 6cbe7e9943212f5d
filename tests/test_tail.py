"""``chatmod tail`` on a live decisions file, and on a pipe."""

from __future__ import annotations

import argparse
import io
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from chatmod.cli import tail
from chatmod.cli.tail import Printer, Summary

from .helpers import chatmod_command

TIMEOUT = 30


def decision(i: int, action: str = "none", channel: str = "#lobby",
             ts: str = "2026-11-22T03:50:00.123Z") -> bytes:
    return orjson.dumps({
        "id": f"m-{i}", "source": "stdin", "channel": channel, "author": "al",
        "verdict": "delete" if action == "delete" else "pass", "score": 0.5,
        "action": action, "engine": "local", "route": "local", "latency_ms": 3.25,
        "ts": ts, "scores": {}, "text": f"line {i}\x1b[2J",
    }) + b"\n"


def at_end_of(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open with its offset at the file's end."""
    size = path.stat().st_size
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        if fd.resolve() == path.resolve():
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
            if f"pos:\t{size}\n" in info:
                return True
    return False


def wait_until_open(pid: int, path: Path, within: float = 20.0) -> None:
    """Until ``chatmod tail`` has opened ``path`` and gone to its end."""
    deadline = time.monotonic() + within
    while True:
        try:
            if at_end_of(pid, path):
                return
        except (FileNotFoundError, PermissionError):
            pass
        assert time.monotonic() < deadline, "chatmod tail did not open the file"
        time.sleep(0.02)


def read_until(process: subprocess.Popen[bytes], text: str, timeout: float = 10.0) -> str:
    """Its output until ``text`` appears; fails after ``timeout`` s (reads never block)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not printed; got {seen!r}"
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            chunk = os.read(fd, 65536)
            assert chunk, f"chatmod tail ended; printed {seen!r}"
            seen += chunk
    return seen.decode()


def test_tail_follows_a_live_file_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(decision(0))  # already there: not shown without --from-start
    process = subprocess.Popen(
        chatmod_command("tail", str(path), "--no-color", "--summary-every", "0"),
        stdout=subprocess.PIPE)
    try:
        wait_until_open(process.pid, path)  # it has opened the file (and gone to its end)
        with path.open("ab") as f:
            f.write(decision(1, "delete"))
            f.flush()
            first = read_until(process, '"line 1')
            f.write(b"not a decision line\n" + decision(2, "flag"))
            f.flush()
            second = read_until(process, '"line 2')
        path.rename(tmp_path / "decisions.jsonl.1")  # logrotate
        path.write_bytes(decision(3))
        third = read_until(process, '"line 3')
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
    assert "line 0" not in first
    assert "delete" in first
    assert "\x1b" not in first  # control characters escaped
    assert "\\x1b[2J" in first
    assert "(local/local, 3.2 ms)" in first or "(local/local, 3.3 ms)" in first
    assert "not a decision" not in second
    assert "flag" in second
    assert "line 3" in third


def test_tail_filters_a_pipe_and_summarises() -> None:
    data = b"".join([decision(1, "none"), decision(2, "delete", "#kids"),
                     decision(3, "delete", "#lobby"), b"2026 INFO chatmod: log line\n"])
    result = subprocess.run(
        chatmod_command("tail", "--action", "delete", "--channel", "#kids", "--no-color"),
        input=data, capture_output=True, timeout=30, check=True)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2
    assert "line 2" in lines[0]
    assert "#kids" in lines[0]
    assert lines[1].startswith("-- 1 decisions: delete ")
    assert "engine latency p50 3.2 ms" in lines[1] or "p50 3.3 ms" in lines[1]


def test_tail_of_a_missing_file_says_so_and_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "decisions.jsonl"
    result = subprocess.run(chatmod_command("tail", str(missing)), capture_output=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode() == (
        f"chatmod: tail: {missing}: no such file (--retry waits for it)\n")
    directory = subprocess.run(chatmod_command("tail", str(tmp_path)), capture_output=True,
                               timeout=TIMEOUT, check=False)
    assert directory.returncode == 1
    assert directory.stderr.decode() == f"chatmod: tail: {tmp_path}: is a directory\n"


def test_tail_retry_waits_for_the_file_and_shows_it_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            chatmod_command("tail", str(path), "--retry", "--no-color", "--summary-every", "0"),
            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        expected = f"chatmod: tail: {path}: no such file; waiting for it\n"
        deadline = time.monotonic() + TIMEOUT
        while errors.read_text() != expected:
            assert time.monotonic() < deadline, errors.read_text()
            time.sleep(0.02)
        path.write_bytes(decision(1, "delete"))  # a new file: shown from its first line
        shown = read_until(process, '"line 1')
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
    assert "delete" in shown


def test_rates_of_a_finished_file_are_per_second_of_its_own_time_span(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(
        decision(1, "delete", ts="2026-11-22T03:50:00.000Z")
        + decision(2, "none", ts="2026-11-22T03:50:30.000Z")
        + decision(3, "none", ts="2026-11-22T03:50:10.000Z")  # written out of order
        + decision(4, "delete", ts="2026-11-22T03:50:40.000Z"))
    result = subprocess.run(chatmod_command("tail", str(path), "--no-follow", "--no-color"),
                            capture_output=True, timeout=TIMEOUT, check=True)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 5
    assert lines[4] == ("-- 4 decisions over 40.0 s: delete 2 (0.05/s), none 2 (0.05/s); "
                        "engine latency p50 3.2 ms, p99 3.2 ms")
    piped = subprocess.run(chatmod_command("tail", "--no-color"), input=path.read_bytes(),
                           capture_output=True, timeout=TIMEOUT, check=True)
    assert piped.stdout.decode().splitlines()[-1] == lines[4]


def record(action: str, ts: object, latency: object = 1.0) -> dict[str, object]:
    return {"action": action, "verdict": "pass", "ts": ts, "latency_ms": latency}


def test_summary_span_comes_from_the_decisions_timestamps() -> None:
    summary = Summary()
    assert summary.line() == "-- no decisions"
    summary.add(record("flag", "2026-11-22T03:50:00Z"))
    assert summary.line() == ("-- 1 decisions: flag 1; engine latency p50 1.0 ms, "
                              "p99 1.0 ms")  # one instant: no rate
    summary.add(record("flag", "2026-11-22T03:50:05", latency=True))  # no offset: UTC
    summary.add(record("none", "not a time", latency=None))
    summary.add(record("none", None))
    assert summary.span() == 5.0
    assert summary.line().startswith("-- 4 decisions over 5.0 s: flag 2 (0.40/s), "
                                     "none 2 (0.40/s); engine latency p50 1.0 ms")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_tail_does_not_repeat_its_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(tail.time, "monotonic", clock)
    out = io.StringIO()
    args = argparse.Namespace(summary_every=10.0, no_color=True, action=[], channel=[],
                              author=[], route=[])
    printer = Printer(args, out)
    printer.show(record("flag", "2026-11-22T03:50:00Z"))
    printer.maybe_summary()  # not yet due
    clock.now += 10
    printer.maybe_summary()
    for _ in range(3):  # idle: nothing new
        clock.now += 10
        printer.maybe_summary()
    printer.maybe_summary(final=True)
    summaries = [line for line in out.getvalue().splitlines() if line.startswith("--")]
    assert summaries == ["-- 1 decisions: flag 1; engine latency p50 1.0 ms, p99 1.0 ms"]
    printer.show(record("none", "2026-11-22T03:50:02Z"))
    clock.now += 10
    printer.maybe_summary()
    printer.maybe_summary(final=True)
    summaries = [line for line in out.getvalue().splitlines() if line.startswith("--")]
    assert len(summaries) == 2
    assert summaries[1].startswith("-- 2 decisions over 2.0 s: flag 1 (0.50/s), none 1")


def test_sigterm_ends_the_tail_with_its_summary(tmp_path: Path) -> None:
    # It used to die of the signal (exit 143) with no summary; ^C gave one.
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(decision(0, "delete") + decision(1))
    process = subprocess.Popen(
        chatmod_command("tail", str(path), "--no-color", "--from-start", "--summary-every", "0"),
        stdout=subprocess.PIPE)
    try:
        read_until(process, '"line 1')
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None
        rest = process.stdout.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert "-- 2 decisions" in rest


def shown_line(**fields: object) -> str:
    out = io.StringIO()
    args = argparse.Namespace(summary_every=0.0, no_color=True, action=[], channel=[],
                              author=[], route=[])
    Printer(args, out).show({**orjson.loads(decision(1, "delete")), **fields})
    return out.getvalue()


def test_tail_shows_what_the_ladder_did() -> None:
    stepped = shown_line(strikes=2, step="timeout 1h", duration=3600.0)
    assert " delete→timeout 1h (strike 2) " in stepped
    assert " delete→ban (strike 3) repeated " in shown_line(strikes=3, step="ban",
                                                            repeated=True)
    assert " none exempt " in shown_line(action="none", exempt=True)
    plain = shown_line()
    assert " delete " in plain
    assert "→" not in plain
    assert "exempt" not in plain
    assert "repeated" not in plain
    # A hostile line cannot paint the terminal through the step either.
    assert "\x1b" not in shown_line(strikes=1, step="warn\x1b[2J")


def test_an_unknown_action_filter_warns_once_and_still_runs() -> None:
    data = decision(1, "delete") + decision(2, "none")
    result = subprocess.run(
        chatmod_command("tail", "--action", "delet", "--action", "delete", "--no-color"),
        input=data, capture_output=True, timeout=TIMEOUT, check=True)
    warnings = result.stderr.decode().splitlines()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("chatmod: tail: warning: --action delet is not a known action")
    assert "did you mean delete?" in warnings[0]
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2
    assert "line 1" in lines[0]
    known = subprocess.run(chatmod_command("tail", "--action", "kick"), input=data,
                           capture_output=True, timeout=TIMEOUT, check=True)
    assert known.stderr == b""
