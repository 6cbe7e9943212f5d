"""The stdin source: chat lines from standard input, as plain text or JSON lines."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import trio

from chatmod.errors import InputError
from chatmod.interfaces import Intake, Source
from chatmod.lines import Line, LineFramer, decode_line, parse_input_line
from chatmod.model import Message, generate_message_id
from chatmod.schema import setting

READ_CHUNK = 65536
DEFAULT_MAX_LINE_BYTES = 65536


@dataclass(frozen=True)
class StdinConfig:
    format: Literal["text", "jsonl"] = "text"
    max_line_bytes: int = setting(DEFAULT_MAX_LINE_BYTES, min=16, max=64 * 1024 * 1024)
    channel: str | None = setting(None, help="channel given to messages that name none")
    author: str | None = setting(None, help="author given to text lines")


class StdinSource(Source):
    """Reads standard input until end of file.

    Reads happen in a worker thread rather than through a non-blocking fd: making fd 0
    non-blocking would also change the terminal or pipe shared with the parent shell.
    """

    Config = StdinConfig
    config: StdinConfig

    def __init__(self, name: str, config: StdinConfig, *, fd: int = 0) -> None:
        super().__init__(name, config)
        self.fd = fd
        self._framer: LineFramer | None = None
        self.lines = 0
        self.skipped = 0

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        framer = self._framer = LineFramer(self.config.max_line_bytes)
        task_status.started()
        while True:
            chunk = await trio.to_thread.run_sync(
                os.read, self.fd, READ_CHUNK, abandon_on_cancel=True
            )
            items = framer.feed(chunk) if chunk else framer.end()
            for item in items:
                if isinstance(item, Line):
                    message = self._to_message(item, intake)
                    if message is not None:
                        await intake.submit(message)
                else:
                    self.skipped += 1
                    intake.report_invalid(
                        self.name,
                        f"line {item.number}: {item.size} bytes is over max_line_bytes "
                        f"({self.config.max_line_bytes}); skipped",
                    )
            if not chunk:
                return

    def reconfigure(self, config: StdinConfig) -> bool:
        # All of its options are about parsing: they apply from the next line. (Restarting
        # would be unsafe: a read abandoned in the worker thread could swallow input.)
        self.config = config
        if self._framer is not None:
            self._framer.max_line_bytes = config.max_line_bytes
        return True

    def _to_message(self, line: Line, intake: Intake) -> Message | None:
        self.lines += 1
        text, replaced = decode_line(line.data)
        if not text.strip():
            return None
        if replaced:
            intake.report_invalid(
                self.name, f"line {line.number}: invalid UTF-8 replaced with U+FFFD"
            )
        if self.config.format == "text":
            return Message(
                id=generate_message_id(),
                text=text,
                source=self.name,
                author=self.config.author,
                channel=self.config.channel,
            )
        try:
            return parse_input_line(text, self.name, self.config.channel)
        except InputError as exc:
            self.skipped += 1
            intake.report_invalid(self.name, f"line {line.number}: {exc}; skipped")
            return None

    def statistics(self) -> dict[str, float]:
        return {"lines": self.lines, "skipped": self.skipped}
