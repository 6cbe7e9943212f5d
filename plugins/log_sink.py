"""The log sink: a readable one-line summary of each decision on stderr (or the journal)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from chatmod.config.schema import setting
from chatmod.core.interfaces import Sink
from chatmod.core.model import Decision
from chatmod.core.text import printable

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


@dataclass(frozen=True)
class LogConfig:
    """One readable line per decision on stderr, control characters escaped."""

    level: Literal["debug", "info", "warning"] = setting(
        "info", help="the log level of decision lines")
    only_actions: bool = setting(False, help="log only decisions whose action is not 'none'")
    include_text: bool = setting(True, help="show the message text")
    max_text: int = setting(120, min=8, help="characters of text shown at most")


class LogSink(Sink[LogConfig]):
    """Writes ``<action> <verdict> score=… id=… #channel <author> "text" (engine/route, ms)``."""

    Config = LogConfig

    def __init__(self, name: str, config: LogConfig) -> None:
        super().__init__(name, config)
        self.logger = logging.getLogger("chatmod.decisions")
        self.level = _LEVELS[config.level]

    async def write(self, decisions: Sequence[Decision]) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        for decision in decisions:
            if self.config.only_actions and decision.action == "none":
                continue
            self.logger.log(self.level, "%s", self.summary(decision))

    async def write_alert(self, record: Mapping[str, Any]) -> None:
        if record.get("type") == "review":
            # A moderator's review is routine, not an alarm: one info line saying who decided
            # what about which queued item.
            self.logger.info("REVIEW %s", review_summary(record))
            return
        details = ", ".join(f"{k}={printable(str(v), 80)}" for k, v in record.items()
                            if k not in ("type", "text"))
        self.logger.warning("ALERT %s", details)

    def summary(self, decision: Decision) -> str:
        message, verdict = decision.message, decision.verdict
        score = "-" if verdict.score is None else f"{verdict.score:.2f}"
        parts = [
            f"{decision.action:<6}",
            f"verdict={verdict.action}",
            f"score={score}",
            f"id={printable(message.id, 64)}",
        ]
        if message.channel:
            parts.append(printable(message.channel, 64))
        if message.author:
            parts.append(f"<{printable(message.author, 64)}>")
        if self.config.include_text:
            parts.append(f'"{printable(message.text, self.config.max_text)}"')
        flags = "".join(
            f", {flag}" for flag, on in (("shadow", decision.shadow),
                                         ("exempt", decision.exempt)) if on
        )
        parts.append(
            f"({verdict.engine}/{verdict.route}, {decision.latency_ms:.1f} ms{flags})"
        )
        return " ".join(parts)


# The review record's fields shown, in order (text and note are free text: left out).
_REVIEW_FIELDS = ("by", "outcome", "review_id", "message_id", "channel", "author", "action",
                  "lift")


def review_summary(record: Mapping[str, Any]) -> str:
    """``by=ana outcome=overturned review_id=… message_id=… #kids <al> action=delete lift=True``
    for a ``{"type": "review"}`` record, control characters escaped."""
    parts = []
    for key in _REVIEW_FIELDS:
        value = record.get(key)
        if value is None:
            continue
        shown = printable(str(value), 64)
        parts.append(shown if key == "channel" else f"<{shown}>" if key == "author"
                     else f"{key}={shown}")
    return " ".join(parts)
