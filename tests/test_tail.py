"""``chatmod tail`` on a live decisions file, and on a pipe."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

import orjson

from .helpers import chatmod_command


def decision(i: int, action: str = "none", channel: str = "#lobby") -> bytes:
    return orjson.dumps({
        "id": f"m-{i}", "source": "stdin", "channel": channel, "author": "al",
        "verdict": "delete" if action == "delete" else "pass", "score": 0.5,
        "action": action, "engine": "local", "route": "local", "latency_ms": 3.25,
        "ts": "2026-11-22T03:50:00.123Z", "scores": {}, "text": f"line {i}\x1b[2J",
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
