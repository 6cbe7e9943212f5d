"""Queued items, reviews and the review record, with no I/O."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from chatmod.core.model import Decision, format_timestamp
from chatmod.errors import ReviewError

log = logging.getLogger("chatmod.review")

APPROVED = "approved"
OVERTURNED = "overturned"
OUTCOMES = (APPROVED, OVERTURNED)


@dataclass(frozen=True)
class ReviewItem:
    """One decision waiting for a person: ``record`` is its decision line (text included)."""

    id: str
    queued_at: float
    record: dict[str, Any]

    @property
    def text(self) -> str:
        text = self.record.get("text")
        return text if isinstance(text, str) else ""

    def summary(self) -> dict[str, Any]:
        """What ``chatmod review list`` shows of it."""
        record = self.record
        return {"id": self.id, "queued": format_timestamp(self.queued_at),
                "action": record.get("action"), "channel": record.get("channel"),
                "author": record.get("author"), "score": record.get("score"),
                "text": self.text}


@dataclass(frozen=True)
class Review:
    """A person's answer to an item: ``approved`` (the action stands) or ``overturned`` (it
    should not have been taken; the text goes on the allow-list until ``allow_until``)."""

    item: ReviewItem
    outcome: str
    by: str
    note: str
    reviewed_at: float
    allow_until: float | None

    def to_json(self) -> bytes:
        return orjson.dumps({"item": {"id": self.item.id, "queued_at": self.item.queued_at,
                                      "record": self.item.record},
                             "outcome": self.outcome, "by": self.by, "note": self.note,
                             "reviewed_at": self.reviewed_at, "allow_until": self.allow_until})

    def record(self, *, include_text: bool = True) -> dict[str, Any]:
        """The ``{"type": "review", ...}`` record the sinks get: enough for a platform to
        find the message (``message_id``, ``channel``, ``author``) and lift the action."""
        original = self.item.record
        record: dict[str, Any] = {
            "type": "review", "review_id": self.item.id, "outcome": self.outcome,
            "message_id": original.get("id"), "source": original.get("source"),
            "channel": original.get("channel"), "author": original.get("author"),
            "action": original.get("action"), "verdict": original.get("verdict"),
            "engine": original.get("engine"), "by": self.by, "note": self.note,
            "reviewed_at": format_timestamp(self.reviewed_at),
            "lift": self.outcome == OVERTURNED,
        }
        if include_text:
            record["text"] = self.item.text
        return record


def review_from_json(data: bytes | str) -> Review:
    """A review as :meth:`Review.to_json` wrote it; :class:`ReviewError` if it is not one."""
    try:
        raw = orjson.loads(data)
        item = raw["item"]
        allow_until = raw["allow_until"]
        review = Review(
            ReviewItem(str(item["id"]), float(item["queued_at"]), dict(item["record"])),
            str(raw["outcome"]), str(raw["by"]), str(raw["note"]), float(raw["reviewed_at"]),
            None if allow_until is None else float(allow_until))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ReviewError(f"unreadable review in the store: {type(exc).__name__}") from None
    if review.outcome not in OUTCOMES:
        raise ReviewError(f"unreadable review in the store: outcome {review.outcome!r}")
    return review


def readable_review(data: object) -> Review | None:
    """A review from the store, or None (logged) when it cannot be read: one bad entry
    (written by hand, or by another version) must not stall the feed."""
    if not isinstance(data, bytes | str):
        log.warning("review store: an entry without a review was skipped")
        return None
    try:
        return review_from_json(data)
    except ReviewError as exc:
        log.warning("%s; skipped", exc)
        return None


# Seconds a message is remembered as queued: a durable source's redelivery (after a crash)
# comes within minutes, and must not queue the message twice.
QUEUED_KEY_TTL = 24 * 3600.0


def item_record(decision: Decision) -> tuple[str, bytes]:
    """A decision as it is queued: the message's key (source and id: a redelivered message
    has the same) and its decision line, text always included (the reviewer reads it, and an
    overturn needs it)."""
    message = decision.message
    return (f"{message.source}\x1f{message.id}",
            decision.to_line(include_text=True).rstrip(b"\n"))


def item_from_json(item_id: str, queued_at: float, data: bytes | str) -> ReviewItem:
    """A queued item. One whose record cannot be read is still listed (with an empty text,
    marked ``unreadable``), so a reviewer can answer it and clear it from the queue."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        record = {"text": "", "unreadable": "the record in the store is not a JSON object"}
    return ReviewItem(item_id, queued_at, record)


def decide_review(item: ReviewItem, outcome: str, by: str, note: str, allow_ttl: float,
                  now: float | None = None) -> Review:
    """The review of ``item``; an overturn allows its text for ``allow_ttl`` seconds."""
    if outcome not in OUTCOMES:
        raise ReviewError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    now = time.time() if now is None else now
    allow_until = now + allow_ttl if outcome == OVERTURNED and item.text else None
    return Review(item, outcome, by, note, now, allow_until)
