"""Messages, verdicts and decisions, and the decision line they serialise to."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, SupportsFloat, SupportsIndex

import msgspec
import orjson

from chatmod.core.quick import quick_init, quick_maker

# Verdicts an engine may suggest; any other string is kept as it was said.
PASS = "pass"
FLAG = "flag"
DELETE = "delete"
KNOWN_VERDICTS = frozenset({PASS, FLAG, DELETE})
# Message.event for someone joining a channel (or changing nick): the engine is asked about
# the name (Chatsight's username check), not about a text.
JOIN_EVENT = "join"
# A join's text: no chat line is likely to be this, so the verdict cache keeps them apart.
JOIN_TEXT_PREFIX = "[join] "

_ID_PREFIX = os.urandom(4).hex()
_id_counter = itertools.count(1)


def generate_message_id() -> str:
    """A process-unique id for a message that came without one (cheaper than uuid4)."""
    return f"{_ID_PREFIX}-{next(_id_counter)}"


@quick_init
@dataclass(slots=True, frozen=True)
class Message:
    """One chat line."""

    id: str
    text: str
    source: str
    author: str | None = None
    channel: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    images: tuple[str, ...] = ()
    #: When the message was said, as its source states it (voice: the offset into the
    #: conversation); it appears in the decision line only when set.
    timestamp: str | None = None
    #: A verdict the source already has (voice: Chatsight moderated each sentence); the
    #: pipeline uses it instead of asking an engine.
    verdict: Verdict | None = None
    #: The author's account with the chat service, when the source knows it (IRC: the
    #: ``account`` tag, set when the author is logged in); in the decision line only when set.
    author_account: str | None = None
    #: Not a chat line but an event about ``author``: ``"join"`` (see :data:`JOIN_EVENT`).
    event: str | None = None


#: ``Message(id, text, source, author, channel)``, the other fields at their defaults: the
#: input lines of the usual shape are made with it.
new_message: Callable[[str, str, str, str | None, str | None], Message] = quick_maker(
    Message, ("id", "text", "source", "author", "channel"))


@quick_init
@dataclass(slots=True, frozen=True)
class Verdict:
    """What an engine says of a message.

    ``action`` is the engine's suggestion as it said it (``pass``, ``flag``, ``delete`` or an
    unknown string kept as is); ``route`` is how the verdict was obtained.
    """

    action: str
    score: float | None
    engine: str
    route: str
    scores: Mapping[str, Any] = field(default_factory=dict)


#: ``Verdict(action, score, engine, route, scores)``: a streaming engine's verdict per reply
#: (0.36 µs, 0.52 through the class's call).
new_verdict: Callable[[str, float | None, str, str, Mapping[str, Any]], Verdict] = quick_maker(
    Verdict, ("action", "score", "engine", "route", "scores"))


@quick_init
@dataclass(slots=True, frozen=True)
class Decision:
    """A message, its verdict, the policy's action and how it was reached."""

    message: Message
    verdict: Verdict
    action: str
    latency_ms: float
    ts: float = field(default_factory=time.time)
    shadow: bool = False
    exempt: bool = False
    #: The escalation ladder's part (chatmod.policy.escalation), when the verdict counted as
    #: a strike: the author's strikes in the channel within the window, the step taken
    #: (``warn``, ``timeout 10m``, ``kick``, ``ban``), its duration in seconds, and why.
    strikes: int | None = None
    step: str | None = None
    duration: float | None = None
    reason: str | None = None
    #: The step was already taken for this message id (a redelivery): recorded, not repeated.
    repeated: bool = False
    #: The verdict the action followed when the policy's cut-offs or fail mode changed the
    #: engine's (``reason`` says how); None: the engine's own.
    judged: str | None = None

    def to_record(self, *, include_text: bool = True) -> dict[str, Any]:
        """The decision line as a dict, keys in the documented order."""
        return _decision_record(self, round(self.latency_ms, 3), include_text)

    def to_line(self, *, include_text: bool = True) -> bytes:
        """The decision line: one JSON object and a newline."""
        return _odd_line(self.to_record(include_text=include_text))


#: ``Decision(message, verdict, action, latency_ms, ts, shadow, reason=reason,
#: judged=judged)``, the other fields at their defaults: the policy makes one per message.
new_decision: Callable[[Message, Verdict, str, float, float, bool, str | None, str | None],
                       Decision] = quick_maker(
    Decision, ("message", "verdict", "action", "latency_ms", "ts", "shadow", "reason", "judged"))


_LINE_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
# The usual record (text keys, JSON's own types) needs neither: 0.8 µs a line instead of 1.6.
_PLAIN_LINE = orjson.OPT_APPEND_NEWLINE


class _UsualLine(msgspec.Struct, omit_defaults=True, gc=False):
    """A usual decision line (no ladder step), its fields in the record's order: msgspec
    writes a batch of these as lines in one call, and leaves out each optional field at its
    default (None, False), as :func:`_decision_record` does. The scores come as orjson
    wrote them. A struct and one call for the batch cost less than a record dict and an
    orjson call per line (decision_lines: 1.7-2.6 against 1.4-2.1 µs a line)."""

    id: Any
    source: Any
    channel: Any
    author: Any
    verdict: Any
    score: Any
    action: Any
    engine: Any
    route: Any
    latency_ms: Any
    ts: Any
    scores: msgspec.Raw
    text: Any = None
    timestamp: Any = None
    author_account: Any = None
    event: Any = None
    shadow: bool = False
    exempt: bool = False
    reason: Any = None
    repeated: bool = False


_encode_lines = msgspec.json.Encoder().encode_lines
# msgspec writes a float of this size or more as 1e16, orjson as 1e+16: such a score takes
# the record's path, so both paths write the same bytes.
_SAME_FLOAT_TEXT = 1e16


def decision_lines(decisions: Iterable[Decision], *, include_text: bool = True) -> bytes:
    """The decision lines of ``decisions``, joined: the bytes of each one's
    :meth:`Decision.to_line`, with less work per decision (every decision comes through here).

    The usual decision is written by msgspec from a :class:`_UsualLine`, its scores by
    orjson, the batch in one call; a decision with a ladder step, scores orjson writes only
    with options, or an odd score is written as :meth:`Decision.to_line` writes it (and
    carried as msgspec's raw JSON). A batch with a value msgspec cannot write (a text no
    UTF-8 can spell, a type it does not know) is written the record's way whole. A batch's
    decisions share their latency (one engine call), so it is rounded once, and the policy
    gives them one time, so it is formatted once.
    """
    if not isinstance(decisions, list | tuple):
        decisions = list(decisions)
    dumps, refused, raw, line = orjson.dumps, orjson.JSONEncodeError, msgspec.Raw, _UsualLine
    items: list[_UsualLine | msgspec.Raw] = []
    add = items.append
    last_latency: object = None
    rounded = 0.0
    last_ts: object = None
    ts_text = ""
    for decision in decisions:
        latency = decision.latency_ms
        if latency is not last_latency:  # identity: 0.0 and -0.0 are equal, not the same
            last_latency, rounded = latency, round(latency, 3)
        ts = decision.ts
        if ts is not last_ts:
            last_ts, ts_text = ts, format_timestamp(ts)
        message, verdict = decision.message, decision.verdict
        score = verdict.score
        if decision.step is None and (score is None or (type(score) is float and (
                -_SAME_FLOAT_TEXT < score < _SAME_FLOAT_TEXT))):
            try:
                scores = raw(dumps(verdict.scores))
            except refused:  # a key that is no text, or a value JSON has no type for
                pass
            else:
                add(line(message.id, message.source, message.channel, message.author,
                         verdict.action, score, decision.action, verdict.engine,
                         verdict.route, rounded, ts_text, scores,
                         message.text if include_text else None, message.timestamp,
                         message.author_account, message.event, decision.shadow,
                         decision.exempt, decision.reason, decision.repeated))
                continue
        add(raw(_record_line(_decision_record(decision, rounded, include_text, ts_text))[:-1]))
    try:
        return _encode_lines(items)
    except Exception:
        return _record_lines(decisions, include_text)


def _record_lines(decisions: Iterable[Decision], include_text: bool) -> bytes:
    """The lines of ``decisions``, each written from its record (:func:`decision_lines`
    without msgspec)."""
    return b"".join([_record_line(_decision_record(
        decision, round(decision.latency_ms, 3), include_text, format_timestamp(decision.ts)))
        for decision in decisions])


def _record_line(record: dict[str, Any]) -> bytes:
    """A record's line: written first with no option that only odd records need (keys that
    are not text, values JSON has no type for), which halves orjson's time; the odd record
    again with them, as :meth:`Decision.to_line` writes it."""
    try:
        return orjson.dumps(record, option=_PLAIN_LINE)
    except orjson.JSONEncodeError:
        return _odd_line(record)


def _odd_line(record: dict[str, Any]) -> bytes:
    """The line of a record that may hold keys that are not text or values JSON has no type
    for (an engine's raw scores); one orjson still refuses (an integer beyond 64 bits, a
    cycle) is written with those values as text."""
    try:
        return orjson.dumps(record, option=_LINE_OPTIONS, default=_json_default)
    except orjson.JSONEncodeError:
        return orjson.dumps(_json_safe(record, MAX_ODD_DEPTH), option=_LINE_OPTIONS,
                            default=_json_default)


# How deep :func:`_json_safe` goes into an odd record before writing what is left as text.
MAX_ODD_DEPTH = 32


def _json_safe(value: object, depth: int) -> object:
    """``value`` with every integer orjson cannot write (beyond 64 bits) as text, and what
    lies deeper than ``depth`` (a cycle) as text."""
    if _beyond_orjson(value):
        return _text_of(value)
    if depth <= 0:
        return (_text_of(value) if isinstance(value, dict | list | tuple | set | frozenset)
                else value)
    if isinstance(value, dict):
        # A key orjson cannot write as it is (OPT_NON_STR_KEYS takes numbers, None, booleans).
        return {_text_of(key) if _beyond_orjson(key) else key: _json_safe(item, depth - 1)
                for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item, depth - 1) for item in value]
    return value


def _beyond_orjson(value: object) -> bool:
    """An integer orjson cannot write (beyond 64 bits)."""
    return isinstance(value, int) and not isinstance(value, bool) and not (
        -(2**63) <= value < 2**64)


def _decision_record(decision: Decision, latency_ms: float, include_text: bool,
                     ts_text: str | None = None) -> dict[str, Any]:
    """The decision line as a dict, keys in the documented order (``latency_ms`` rounded;
    ``ts_text``, when given, is ``format_timestamp(decision.ts)``)."""
    message, verdict = decision.message, decision.verdict
    record: dict[str, Any] = {
        "id": message.id,
        "source": message.source,
        "channel": message.channel,
        "author": message.author,
        "verdict": verdict.action,
        "score": verdict.score,
        "action": decision.action,
        "engine": verdict.engine,
        "route": verdict.route,
        "latency_ms": latency_ms,
        "ts": format_timestamp(decision.ts) if ts_text is None else ts_text,
        "scores": verdict.scores,
    }
    if include_text:
        record["text"] = message.text
    if message.timestamp is not None:
        record["timestamp"] = message.timestamp
    if message.author_account is not None:
        record["author_account"] = message.author_account
    if message.event is not None:
        record["event"] = message.event
    # Only present when true, so the common line stays the documented one.
    if decision.shadow:
        record["shadow"] = True
    if decision.exempt:
        record["exempt"] = True
    if decision.step is not None:
        record["strikes"] = decision.strikes
        record["step"] = decision.step
        if decision.duration is not None:
            record["duration"] = decision.duration
    if decision.reason is not None:
        record["reason"] = decision.reason
    if decision.repeated:
        record["repeated"] = True
    return record


def format_timestamp(ts: float) -> str:
    """UTC ISO 8601 with milliseconds, e.g. ``2026-11-22T02:39:43.123Z``.

    Every decision line has one, so the date and time of day are formatted once per second
    (kept in :data:`_last_second`) and only the milliseconds per call. The float is split
    as ``datetime.fromtimestamp`` splits it (microseconds rounded half to even, carried into
    the second), so the text is the same as
    ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`` with a ``Z``.
    """
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1.0
        micros += 1_000_000
    second = int(whole)
    cached = _last_second[0]
    if cached[0] != second:
        cached = (second, datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat())
        _last_second[0] = cached  # one reference swap: safe from a logging thread
    return f"{cached[1]}.{micros // 1000:03d}Z"


#: The last second :func:`format_timestamp` formatted, and its text.
_last_second: list[tuple[int, str]] = [(-1, "")]


def _json_default(value: object) -> object:
    # Engines' raw scores may hold odd types (e.g. numpy floats); never fail a decision on them.
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, str | bytes | bytearray | memoryview | SupportsFloat | SupportsIndex):
        try:
            return float(value)
        except Exception:  # not a number after all, or its own conversion is broken
            pass
    return _text_of(value)


def _text_of(value: object) -> str:
    """``str(value)``, or its type's name in angle brackets when that raises: an integer of
    more digits than Python converts (4,300), an engine's object whose ``__str__`` fails. The
    decision line (and the others of its batch) is written either way."""
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"
