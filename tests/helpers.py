"""Shared test helpers: fake plugins that record what the pipeline does, and subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import trio

from chatmod.core.interfaces import Intake, Sink, Source
from chatmod.core.model import Decision, Message

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "config.example.toml"
SUBPROCESS_TIMEOUT = 60


class ListSource(Source):
    """Submits the given messages, then ends (or stays open when ``stay_open``)."""

    def __init__(self, name: str, messages: Sequence[Message], stay_open: bool = False) -> None:
        super().__init__(name, None)
        self.messages = list(messages)
        self.stay_open = stay_open
        self.submitted = 0
        self.acknowledged: list[str] = []

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        for message in self.messages:
            await intake.submit(message)
            self.submitted += 1
        if self.stay_open:
            await trio.sleep_forever()

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        self.acknowledged.extend(m.id for m in messages)


class CollectingIntake:
    """An intake that keeps every message and every report of invalid input."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.invalid: list[str] = []

    async def submit(self, message: Message) -> None:
        self.messages.append(message)

    async def submit_many(self, messages: Sequence[Message]) -> None:
        self.messages.extend(messages)

    def report_invalid(self, source: str, reason: str) -> None:
        self.invalid.append(reason)


class RecordingSink(Sink):
    """Keeps every decision; ``delay`` seconds per write; fails when ``fail`` is set."""

    def __init__(self, name: str = "recorder", delay: float = 0.0, fail: bool = False) -> None:
        super().__init__(name, None)
        self.decisions: list[Decision] = []
        self.alerts: list[Mapping[str, Any]] = []
        self.delay = delay
        self.fail = fail
        self.closed = False

    async def write(self, decisions: Sequence[Decision]) -> None:
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail:
            raise OSError("disk full")
        self.decisions.extend(decisions)

    async def write_alert(self, record: Mapping[str, Any]) -> None:
        self.alerts.append(record)

    async def aclose(self) -> None:
        self.closed = True


def messages(n: int, text: str = "hello", source: str = "test") -> list[Message]:
    return [Message(id=f"m-{i}", text=f"{text} {i}", source=source) for i in range(n)]


def chatmod_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatmod", *args]


def run_chatmod(
    *args: str,
    input: bytes = b"",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        chatmod_command(*args),
        input=input,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


def decision_lines(stdout: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stdout.splitlines() if line.strip()]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


WORDLIST_CONFIG = """
[engine]
primary = "wordlist"

[engines.wordlist]
delete = ["idiot"]
flag = ["pizza"]

[[sources]]
type = "stdin"
format = "{format}"

[[sinks]]
type = "jsonl"
path = "{path}"
"""


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, checking every 10 ms; fail after ``within`` s."""
    with trio.fail_after(within):
        while True:
            if predicate():
                return
            await trio.sleep(0.01)


class Daemon:
    """``chatmod run`` with stdin kept open, decisions to a file, stderr to a file."""

    def __init__(self, tmp: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.out = tmp / "decisions.jsonl"
        self.log = tmp / "stderr.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                chatmod_command("run", "-c", str(config)), stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **(env or {})},
            )
        self.sent = 0
        self._lock = threading.Lock()

    def send(self, *lines: str) -> None:
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write("".join(f"{line}\n" for line in lines).encode())
            self.process.stdin.flush()
            self.sent += len(lines)

    def decisions(self) -> list[dict[str, object]]:
        if not self.out.exists():
            return []
        data = self.out.read_bytes()
        # Only whole lines: the daemon may be writing the last one (or was killed mid-write).
        return decision_lines(data[:data.rfind(b"\n") + 1])

    def wait_for(self, predicate: object, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()}")

    def wait_for_log(self, text: str, count: int = 1) -> None:
        self.wait_for(lambda: self.log.read_text().count(text) >= count, repr(text))

    def finish(self) -> int:
        """End of input: the daemon drains and exits; its exit code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        assert self.process.stdin is not None
        self.process.stdin.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
