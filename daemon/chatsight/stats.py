"""Chatsight moderation statistics: requests, replies and the search rules. No I/O here.

Facts from the provider's document (kept here so the project does not depend on it):

- ``GET /stats/moderation``: lifetime counters, as *strings*:
  ``{"api": "chatsight-lang-text", "success": true, "response": {"commentsPassed": "2002887",
  "commentsTotal": "2021398", "commentsDeleted": "11191", "commentsFlagged": "1102"}}``.
- ``POST /stats/moderation/search`` with ``{"timefrom": "YYYY-MM-DD HH:MM:SS", "timeto": ...}``
  (UTC). The range is rounded to the nearest hour (20:27-21:30 is read as 20:00-22:00). At most
  1440 records (24 hours) per request, and one request every two minutes.
- The reply is a list of records, one per minute that saw traffic: numbers this time, and
  ``requestTime.value`` an ISO 8601 UTC time at 55 seconds past the minute (a record is
  committed at 0:55). With no records: ``"success": false`` and the text "Records are
  currently empty, try again in a little while."

The daemon serves its own counters in the same shapes, so one dashboard reads either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from chatmod.errors import ProtocolError
from chatmod.protocols.replies import as_number, json_object

LIFETIME_PATH = "/stats/moderation"
SEARCH_PATH = "/stats/moderation/search"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_RECORDS = 1440  # per search request: 24 hours of one-minute records
SEARCH_INTERVAL = 120.0  # seconds between two search requests
RECORD_SECOND = 55  # records are stamped at 0:55 of their minute
EMPTY_RECORDS = "Records are currently empty, try again in a little while."
API_NAME = "chatsight-lang-text"
COUNTER_KEYS = ("commentsPassed", "commentsTotal", "commentsDeleted", "commentsFlagged")
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Counts:
    """Comments passed, flagged, deleted and in total (total also counts other verdicts)."""

    passed: int = 0
    flagged: int = 0
    deleted: int = 0
    total: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.passed + other.passed, self.flagged + other.flagged,
                      self.deleted + other.deleted, self.total + other.total)

    def as_api(self, *, strings: bool = False) -> dict[str, Any]:
        values = (self.passed, self.total, self.deleted, self.flagged)
        return {key: str(v) if strings else v for key, v in zip(COUNTER_KEYS, values,
                                                                   strict=True)}


def counts_for_verdict(verdict: str) -> Counts:
    """How one decided message counts: by the verdict, as Chatsight counts suggestions."""
    if verdict == "pass":
        return Counts(passed=1, total=1)
    if verdict == "flag":
        return Counts(flagged=1, total=1)
    if verdict == "delete":
        return Counts(deleted=1, total=1)
    return Counts(total=1)


@dataclass(frozen=True, slots=True)
class Record:
    """One minute's counts; ``minute`` is the start of the minute (UTC)."""

    minute: datetime
    counts: Counts

    @property
    def stamped(self) -> datetime:
        """The time the API gives the record: 55 seconds past the minute."""
        return self.minute + timedelta(seconds=RECORD_SECOND)

    def as_api(self) -> dict[str, Any]:
        # isoformat, not strftime: strftime writes year 999 as "999", which no one can read.
        stamp = self.stamped.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
        return {**self.counts.as_api(), "requestTime": {"value": stamp}}


def parse_time(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) as an aware datetime that a search can round to the hour;
    :class:`ProtocolError` says what is wrong."""
    try:
        when = datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ProtocolError(
            f"expected a UTC time as YYYY-MM-DD HH:MM:SS, found {text!r}") from None
    try:
        round_to_hour(when)
    except OverflowError:  # 9999-12-31 23:30 and later round past the calendar's end
        raise ProtocolError(f"{text!r} is too late to search") from None
    return when


def format_time(when: datetime) -> str:
    # isoformat, not strftime: strftime writes year 999 as "999", which parse_time refuses.
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")


def round_to_hour(when: datetime) -> datetime:
    """The nearest hour, half up, as the API does (20:27 -> 20:00, 21:30 -> 22:00)."""
    floor = when.replace(minute=0, second=0, microsecond=0)
    return floor + HOUR if when - floor >= timedelta(minutes=30) else floor


def api_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The range the API actually searches for ``start``..``end``."""
    return round_to_hour(start), round_to_hour(end)


def split_range(start: datetime, end: datetime, records: int = MAX_RECORDS
                ) -> list[tuple[datetime, datetime]]:
    """``start``..``end`` (already on the hour) cut into requests of at most ``records``
    minutes each; each piece starts and ends on the hour, so the API rounds none of them."""
    step = MINUTE * records
    pieces: list[tuple[datetime, datetime]] = []
    while start < end:
        # Compared as a span, not as start + step, which may pass the calendar's end.
        piece_end = end if end - start <= step else start + step
        pieces.append((start, piece_end))
        start = piece_end
    return pieces


def search_request(start: datetime, end: datetime) -> bytes:
    return orjson.dumps({"timefrom": format_time(start), "timeto": format_time(end)})


def parse_search_request(body: bytes) -> tuple[datetime, datetime]:
    """A search request's range, unrounded; ValueError says what is wrong."""
    try:
        payload = json_object(body, ValueError)
    except ValueError:
        raise ProtocolError("body must be a JSON object with timefrom and timeto") from None
    bounds = []
    for key in ("timefrom", "timeto"):
        value = payload.get(key)
        if not isinstance(value, str):
            raise ProtocolError(f"{key}: expected a string YYYY-MM-DD HH:MM:SS")
        try:
            bounds.append(parse_time(value))
        except ProtocolError as exc:
            raise ProtocolError(f"{key}: {exc}") from None
    return bounds[0], bounds[1]


def select_records(minutes: Mapping[datetime, Counts], start: datetime, end: datetime
                   ) -> list[Record]:
    """What a search answers: the rounded range, minutes with traffic, 1440 at most."""
    start, end = api_range(start, end)
    chosen = sorted(m for m in minutes if start <= m < end)[:MAX_RECORDS]
    return [Record(m, minutes[m]) for m in chosen]


def envelope(response: Any, *, success: bool = True) -> bytes:
    return orjson.dumps({"api": API_NAME, "success": success, "response": response})


def lifetime_reply(counts: Counts) -> bytes:
    return envelope(counts.as_api(strings=True))


def search_reply(records: Iterable[Record]) -> bytes:
    listed = [r.as_api() for r in records]
    return envelope(listed) if listed else envelope(EMPTY_RECORDS, success=False)


def _whole_number(value: Any) -> int | None:
    """A counter exactly: from an integer or an integer string (no float rounding), else from
    a finite number; ``None`` when it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    number = as_number(value)
    return int(number) if number is not None and math.isfinite(number) else None


def _counts(values: Mapping[str, Any]) -> Counts:
    def number(key: str) -> int:
        value = _whole_number(values.get(key))
        if value is None:
            raise ProtocolError(f"{key} is missing or not a finite number")
        return value

    return Counts(passed=number("commentsPassed"), flagged=number("commentsFlagged"),
                  deleted=number("commentsDeleted"), total=number("commentsTotal"))


def parse_lifetime(data: bytes) -> Counts:
    """The lifetime counters (strings in the reply) as numbers."""
    reply = json_object(data, ProtocolError)
    response = reply.get("response")
    if reply.get("success") is False or not isinstance(response, dict):
        raise ProtocolError(f"stats refused: {str(response)[:200]}")
    return _counts(response)


def parse_search(data: bytes) -> list[Record]:
    """The records of one search; the "records are empty" reply is an empty list."""
    reply = json_object(data, ProtocolError)
    response = reply.get("response")
    if reply.get("success") is False:
        if isinstance(response, str) and "empty" in response.lower():
            return []
        raise ProtocolError(f"search refused: {str(response)[:200]}")
    if not isinstance(response, list):
        raise ProtocolError("search response is not a list of records")
    records: list[Record] = []
    for i, item in enumerate(response):
        if not isinstance(item, dict):
            raise ProtocolError(f"record {i} is not an object")
        stamp = item.get("requestTime")
        value = stamp.get("value") if isinstance(stamp, dict) else stamp
        if not isinstance(value, str):
            raise ProtocolError(f"record {i} has no requestTime")
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            # The API's times are UTC: one without an offset is not in this machine's zone.
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        except ValueError:
            raise ProtocolError(f"record {i}: requestTime {value!r} is not ISO 8601") from None
        except OverflowError:
            raise ProtocolError(f"record {i}: requestTime {value!r} is out of range") from None
        records.append(Record(when.replace(second=0, microsecond=0), _counts(item)))
    return records


def merge_records(batches: Iterable[Iterable[Record]]) -> list[Record]:
    """Records of several searches in time order, one per minute (a repeated minute, as
    at a piece's edge, is kept once)."""
    by_minute: dict[datetime, Record] = {}
    for batch in batches:
        for record in batch:
            by_minute.setdefault(record.minute, record)
    return [by_minute[m] for m in sorted(by_minute)]
