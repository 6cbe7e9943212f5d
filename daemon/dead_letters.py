"""Dead letters: where a decision goes when a sink gives up on it, with the reason.

A JSON-lines file, one record per decision: ``{"ts", "sink", "error", "decision"}`` where
``decision`` is the decision line; or, for a message the pipeline could not decide at all,
``{"ts", "component", "error", "message"}``. A decision written here counts as taken, so its
source is acknowledged; if even this write fails, it is not, and a durable source delivers it
again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import trio

from chatmod.model import Decision, Message, format_timestamp
from chatmod.schema import setting

log = logging.getLogger("chatmod.dead_letters")


@dataclass(frozen=True)
class DeadLettersSection:
    """Decisions a sink gave up on. A decision written here counts as taken, so its source is
    acknowledged; if even this file cannot be written, the message is not acknowledged and a
    durable source (Redis) delivers it again. Nothing is dropped silently."""

    path: str = setting("dead-letters.jsonl", nonempty=True,
                        help="JSON-lines file (appended) for decisions a sink gave up on")
    include_text: bool = setting(True, help="keep the message text in dead letters")


class DeadLetters:
    def __init__(self, section: DeadLettersSection) -> None:
        self.path = section.path
        self.include_text = section.include_text
        self.written = 0
        self.failed = 0
        self._lock = trio.Lock()

    async def put(self, decisions: Sequence[Decision], sink: str, error: str) -> bool:
        """Record ``decisions`` that ``sink`` gave up on; False if they could not be."""
        now = format_timestamp(time.time())
        data = b"".join(
            orjson.dumps({"ts": now, "sink": sink, "error": error,
                          "decision": d.to_record(include_text=self.include_text)},
                         option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
                         default=str)
            for d in decisions)
        return await self._write(data, len(decisions),
                                 ", ".join(d.message.id for d in decisions[:20]))

    async def put_message(self, message: Message, component: str, error: str) -> bool:
        """Record a message that could not be decided (``component`` failed on it); False
        if it could not be recorded. The record has ``message`` instead of ``decision``."""
        record = {"id": message.id, "source": message.source, "channel": message.channel,
                  "author": message.author}
        if self.include_text:
            record["text"] = message.text
        data = orjson.dumps({"ts": format_timestamp(time.time()), "component": component,
                             "error": error, "message": record},
                            option=orjson.OPT_APPEND_NEWLINE)
        return await self._write(data, 1, message.id)

    async def _write(self, data: bytes, count: int, ids: str) -> bool:
        async with self._lock:
            try:
                # Opened per write: a rare path, and it follows logrotate without help.
                await trio.to_thread.run_sync(self._append, data)
            except OSError as exc:
                self.failed += count
                log.error("could not write %d dead letter(s) to %s: %s; their sources are "
                          "not acknowledged (ids: %s)", count, self.path,
                          exc.strerror or exc, ids)
                return False
        self.written += count
        return True

    def _append(self, data: bytes) -> None:
        with open(self.path, "ab") as file:
            file.write(data)
            file.flush()
