"""The stdin source: chat lines from standard input, as plain text or JSON lines."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Literal

import trio

from chatmod.config.schema import setting
from chatmod.core.interfaces import Intake, Source
from chatmod.core.model import Message, generate_message_id
from chatmod.errors import InputError
from chatmod.protocols.lines import (
    FramedLines,
    LineFramer,
    decode_line,
    parse_input_lines,
)

READ_CHUNK = 65536
DEFAULT_MAX_LINE_BYTES = 65536


@dataclass(frozen=True)
class StdinConfig:
    """One message per line of standard input ([input lines](#input-lines)); end of input ends the
    run once every message is decided."""

    format: Literal["text", "jsonl"] = setting(
        "text", help="text: the whole line is the message text; jsonl: one JSON object per line")
    max_line_bytes: int = setting(
        DEFAULT_MAX_LINE_BYTES, min=16, max=64 * 1024 * 1024,
        help="longer lines are reported and skipped, without being held in memory")
    channel: str | None = setting(None, help="channel given to messages that name none")
    author: str | None = setting(None, help="author given to text lines")


class StdinSource(Source[StdinConfig]):
    """Reads standard input until end of file.

    The descriptor is waited on with trio (epoll) and read only when readable, so stopping
    never abandons a read that already took bytes from the pipe. The descriptor stays
    blocking: making fd 0 non-blocking would also change the terminal or pipe shared with the
    parent shell. A regular file (which epoll refuses) never blocks, so it is read directly.

    Lines come out of a read many at a time; those not yet submitted wait in ``_pending``, so
    a stop (or a restart after a failure) hands them over instead of dropping them.
    """

    Config = StdinConfig

    def __init__(self, name: str, config: StdinConfig, *, fd: int = 0) -> None:
        super().__init__(name, config)
        self.fd = fd
        self._framer = LineFramer(config.max_line_bytes)
        self._pending: deque[FramedLines] = deque()
        self._pollable = True
        self._ended = False
        self.lines = 0
        self.skipped = 0

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await self._submit_pending(intake)
            if self._ended:
                return
            self._take(await self._read(READ_CHUNK))

    async def hand_over(self, intake: Intake) -> None:
        """Submit the lines already read; then finish the line the last read had begun, a
        byte at a time so that nothing past its end is taken from the pipe."""
        await self._submit_pending(intake)
        while not self._ended and self._framer.pending_bytes():
            self._take(await self._read(1))
            await self._submit_pending(intake)

    def unsubmitted(self) -> int:
        lines = sum(len(framed.data) - len(framed.oversized) for framed in self._pending)
        return lines + (1 if not self._ended and self._framer.pending_bytes() else 0)

    async def _read(self, size: int) -> bytes:
        if self._pollable:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except OSError:  # EPERM: a regular file; its reads do not block
                self._pollable = False
        if not self._pollable:
            await trio.lowlevel.checkpoint()
        return os.read(self.fd, size)

    def _take(self, chunk: bytes) -> None:
        framer = self._framer
        self._pending.append(framer.feed_lines(chunk) if chunk else framer.end_lines())
        if not chunk:
            self._ended = True

    async def _submit_pending(self, intake: Intake) -> None:
        # Every complete line the reads brought, handed over with one submit_many: cancelled
        # part-way, the intake keeps what it had not taken (handed over later). The lines
        # are made into messages with no checkpoint in between: taken all at once.
        pending = self._pending
        messages: list[Message] = []
        while pending:
            framed = pending.popleft()
            for item in framed.oversized:
                self.skipped += 1
                intake.report_invalid(
                    self.name,
                    f"line {item.number}: {item.size} bytes is over max_line_bytes "
                    f"({self.config.max_line_bytes}); skipped",
                )
            self.lines += len(framed.data) - len(framed.oversized)
            if self.config.format == "text":
                messages.extend(self._text_messages(framed, intake))
                continue
            problems: list[tuple[int, InputError | None]] = []
            messages += parse_input_lines(framed, self.name, self.config.channel, problems)
            for number, error in problems:
                if error is None:
                    self._report_replaced(number, intake)
                else:  # one report per line: a skipped line is not also reported for UTF-8
                    self.skipped += 1
                    intake.report_invalid(self.name, f"line {number}: {error}; skipped")
        if messages:
            await intake.submit_many(messages)

    def reconfigure(self, config: StdinConfig) -> bool:
        # All of its options are about parsing: they apply from the next line.
        self.config = config
        self._framer.max_line_bytes = config.max_line_bytes
        return True

    def _text_messages(self, framed: FramedLines, intake: Intake) -> list[Message]:
        messages = []
        for number, data in enumerate(framed.data, framed.first):
            text, replaced = decode_line(data)
            if not text.strip():  # blank, or left out as too long
                continue
            if replaced:
                self._report_replaced(number, intake)
            messages.append(Message(generate_message_id(), text, self.name, self.config.author,
                                    self.config.channel))
        return messages

    def _report_replaced(self, number: int, intake: Intake) -> None:
        intake.report_invalid(self.name, f"line {number}: invalid UTF-8 replaced with U+FFFD")

    def statistics(self) -> dict[str, float]:
        return {"lines": self.lines, "skipped": self.skipped}
