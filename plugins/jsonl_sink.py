"""The jsonl sink: one decision line per decision, to a file or to stdout."""

from __future__ import annotations

import os
import select
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
import trio

from chatmod.config.schema import setting
from chatmod.core.interfaces import Sink
from chatmod.core.model import Decision, decision_lines, format_timestamp
from chatmod.errors import SinkError

STDOUT = "-"


@dataclass(frozen=True)
class JsonlConfig:
    """Decision lines ([decision lines](#decision-lines)), flushed after every batch, so `tail -f`
    sees each decision at once; reopened on SIGHUP for logrotate."""

    path: str = setting(STDOUT, nonempty=True, help='a file (appended to), or "-" for stdout')
    include_text: bool = setting(True, help="write each message's text in its decision line")


class JsonlSink(Sink[JsonlConfig]):
    """Appends decision lines and flushes after every batch, so ``tail -f`` sees them at once.

    A regular file is written from the event loop: a write into the page cache costs
    microseconds, a hand-off to a worker thread tens of them, and batches are small when
    decisions trickle in. A pipe, whose reader may stall us, is written from the event loop
    too when that cannot block: the batch fits in ``PIPE_BUF`` (the kernel then writes it
    whole into one free buffer) and the pipe has a free buffer (polled). Otherwise, and for a
    terminal, a worker thread writes it. SIGHUP reopens the file, so logrotate can move it
    away.
    """

    Config = JsonlConfig

    def __init__(self, name: str, config: JsonlConfig) -> None:
        super().__init__(name, config)
        self._file: BinaryIO | None = None
        self._reopen_requested = False
        self._inline = False  # a regular file: written without a worker thread
        self._pipe_room: select.poll | None = None  # a pipe: polled for a free buffer
        self._lock = trio.Lock()
        self.written = 0

    def _open(self) -> BinaryIO:
        try:
            file = sys.stdout.buffer if self.config.path == STDOUT else open(  # noqa: SIM115
                self.config.path, "ab")
            mode = os.fstat(file.fileno()).st_mode
            self._inline = stat.S_ISREG(mode)
            self._pipe_room = None
            if stat.S_ISFIFO(mode):
                self._pipe_room = select.poll()
                self._pipe_room.register(file.fileno(), select.POLLOUT)
        except OSError as exc:
            raise SinkError(f"cannot open {self.config.path}: {exc.strerror or exc}") from None
        return file

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Open at start so a bad path is reported before any message is read.
        self._file = await trio.to_thread.run_sync(self._open)
        task_status.started()

    def _write_blocking(self, data: bytes) -> None:
        if self._reopen_requested:
            self._reopen_requested = False
            self._close_file()
        if self._file is None:
            self._file = self._open()
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            raise SinkError(f"cannot write {self.config.path}: {exc.strerror or exc}") from None

    async def write(self, decisions: Sequence[Decision]) -> None:
        # The batch as one bytes (one orjson.dumps per line, joined) and one write.
        data = decision_lines(decisions, include_text=self.config.include_text)
        async with self._lock:
            if not self._reopen_requested and (self._inline or self._pipe_takes(data)):
                self._write_blocking(data)
            else:
                await trio.to_thread.run_sync(self._write_blocking, data)
        self.written += len(decisions)

    def _pipe_takes(self, data: bytes) -> bool:
        """Whether ``data`` goes into the pipe at once: it fits in ``PIPE_BUF`` and the pipe
        has a free buffer."""
        room = self._pipe_room
        return room is not None and len(data) <= select.PIPE_BUF and bool(room.poll(0))

    async def write_alert(self, record: Mapping[str, Any]) -> None:
        data = orjson.dumps({**record, "ts": format_timestamp(time.time())},
                            option=orjson.OPT_APPEND_NEWLINE, default=str)
        async with self._lock:
            await trio.to_thread.run_sync(self._write_blocking, data)

    def reopen(self) -> None:
        if self.config.path != STDOUT:
            self._reopen_requested = True

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            if file is sys.stdout.buffer:
                file.flush()
            else:
                file.close()
        except OSError as exc:
            # Still closed; what could not be flushed was already reported by write().
            self.log.warning("closing %s: %s", self.config.path, exc.strerror or exc)

    async def aclose(self) -> None:
        async with self._lock:
            await trio.to_thread.run_sync(self._close_file)

    def statistics(self) -> dict[str, float]:
        return {"written": self.written}

