"""SIGTERM mid-stream: every line the daemon read from its stdin pipe is decided (exit 0),
or the exit status is 1 and the log says how many were not. The test keeps its own copy of
the pipe's read end, so after the daemon is gone it reads back exactly what was left unread:
what the daemon read is known to the byte."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from .helpers import (
    EXAMPLE_CONFIG,
    WORDLIST_CONFIG,
    chatmod_command,
    decision_lines,
    write_config,
)

LINES = 200_000
# Decided before the stop (so it lands mid-stream), out of LINES.
STOP_AFTER = 5_000


class PipeWriter(threading.Thread):
    """Writes ``data`` into the pipe until done or told to stop; counts what was written."""

    def __init__(self, fd: int, data: bytes) -> None:
        super().__init__(daemon=True)
        self.fd, self.data = fd, memoryview(data)
        self.written = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while self.written < len(self.data) and not self.stop.is_set():
            try:
                self.written += os.write(self.fd, self.data[self.written:self.written + 4096])
            except BrokenPipeError:
                return


def drain(fd: int, writer: PipeWriter) -> bytes:
    """Everything left in the pipe once the writer has stopped."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    left = bytearray()
    writer.stop.set()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            if not writer.is_alive():
                try:  # what it wrote after the last read
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    return bytes(left)
            else:
                writer.join(0.01)
                continue
        left += chunk


def wait_for_decisions(out: Path, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if out.exists() and out.stat().st_size and out.read_bytes().count(b"\n") >= count:
            return
        assert process.poll() is None, "the daemon ended early"
        time.sleep(0.01)  # polling a file another process writes: no event to wait on
    raise AssertionError(f"fewer than {count} decisions within 30 s")


def reap(process: subprocess.Popen[bytes]) -> None:
    """A daemon a failed test left running is killed, not leaked."""
    if process.poll() is None:
        process.kill()
        process.wait()


def wait_for_log(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        assert process.poll() is None, "the daemon ended early"
        time.sleep(0.01)  # polling a file another process writes: no event to wait on
    raise AssertionError(f"{text!r} not logged within 30 s")


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_sigterm_mid_stream_decides_every_line_read(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(format=fmt, path=out))
    if fmt == "jsonl":
        data = b"".join(orjson.dumps({"id": f"m-{i}", "text": f"line {i}"}) + b"\n"
                        for i in range(LINES))
    else:
        data = b"".join(b"line %d\n" % i for i in range(LINES))
    read_fd, write_fd = os.pipe()
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(chatmod_command("run", "-c", str(config)), stdin=read_fd,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    writer = PipeWriter(write_fd, data)
    writer.start()
    try:
        wait_for_decisions(out, STOP_AFTER, process)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
        left = drain(read_fd, writer)
    finally:
        reap(process)
        writer.stop.set()
        os.close(write_fd)
        os.close(read_fd)
    taken = data[:writer.written - len(left)]
    assert data[writer.written - len(left):writer.written] == left
    lines_read = taken.count(b"\n") + (0 if taken.endswith(b"\n") or not taken else 1)
    decisions = decision_lines(out.read_bytes())
    texts = [d["text"] for d in decisions]
    assert len(texts) == len(set(texts)), "a line was decided twice"
    stderr_text = log.read_text()
    assert lines_read < LINES, "the stop did not land mid-stream"
    if status == 0:
        # Exactly the lines read, in full: the first lines_read lines of the input.
        assert taken.endswith(b"\n"), "exit 0 with half a line read"
        assert sorted(texts) == sorted(f"line {i}" for i in range(lines_read))
    else:
        assert status == 1, stderr_text
        undecided = lines_read - len(texts)
        assert undecided > 0
        assert f"{undecided} message(s) were read but not decided" in stderr_text


def test_a_line_left_unfinished_at_the_stop_makes_the_exit_status_1(tmp_path: Path) -> None:
    out = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "c.toml", "[daemon]\ndrain_timeout = 1\n"
                          + WORDLIST_CONFIG.format(format="text", path=out))
    read_fd, write_fd = os.pipe()
    log = tmp_path / "stderr.log"
    try:
        with log.open("wb") as stderr:
            process = subprocess.Popen(chatmod_command("run", "-c", str(config)),
                                       stdin=read_fd, stdout=subprocess.DEVNULL, stderr=stderr)
        os.write(write_fd, b"first\nsecond\nhalf a li")
        wait_for_decisions(out, 2, process)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
    finally:
        reap(process)
        os.close(write_fd)
        os.close(read_fd)
    # Decisions come in the order they were decided, not read (workers run concurrently).
    assert sorted(d["text"] for d in decision_lines(out.read_bytes())) == ["first", "second"]
    stderr_text = log.read_text()
    assert status == 1, stderr_text
    assert "1 message(s) were read by the sources but not handed over" in stderr_text
    assert "1 message(s) were read but not decided" in stderr_text


def test_the_stop_finishes_the_line_it_had_begun(tmp_path: Path) -> None:
    out = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(format="text", path=out))
    read_fd, write_fd = os.pipe()
    log = tmp_path / "stderr.log"
    try:
        with log.open("wb") as stderr:
            process = subprocess.Popen(chatmod_command("run", "-c", str(config)),
                                       stdin=read_fd, stdout=subprocess.DEVNULL, stderr=stderr)
        os.write(write_fd, b"first\nhalf a li")
        wait_for_decisions(out, 1, process)
        process.send_signal(signal.SIGTERM)
        wait_for_log(log, "SIGTERM: stopped reading", process)
        # The rest of the line and more: only the line's end is taken from the pipe.
        os.write(write_fd, b"ne\nnot read\n")
        status = process.wait(timeout=30)
        flags = fcntl.fcntl(read_fd, fcntl.F_GETFL)
        fcntl.fcntl(read_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        left = os.read(read_fd, 1024)
    finally:
        reap(process)
        os.close(write_fd)
        os.close(read_fd)
    assert status == 0
    assert sorted(d["text"] for d in decision_lines(out.read_bytes())) == ["first",
                                                                           "half a line"]
    assert left == b"not read\n"


def test_sigterm_while_the_engine_still_loads_ends_cleanly(tmp_path: Path) -> None:
    # The example config's local engine loads its model at start (about a second): the
    # signal lands before the stdin source has started. It used to end in "fatal:
    # ExceptionGroup" (the source's task never reported started) and exit 1.
    pytest.importorskip("profanity_check")
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            chatmod_command("run", "-c", str(EXAMPLE_CONFIG), "--debug"),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path)
    try:
        # Logged once the signal handlers are in place, before any engine starts.
        wait_for_log(log, "moderation stats kept in memory only", process)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
    finally:
        reap(process)
        assert process.stdin is not None
        process.stdin.close()
    text = log.read_text()
    assert status == 0, text
    assert "fatal" not in text
    assert "done: 0 received, 0 decided" in text
