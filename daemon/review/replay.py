"""Replay: recorded lines decided again under a new config, and what would change.

Pure logic; the command (:mod:`chatmod.cli.replay`) reads the files and supplies the engines.
Each line goes through three steps:

1. :func:`parse_replay_line`: a decision line (jsonl sink output) gives the message, the
   recorded verdict and the recorded action; a raw chat line (an input line, or plain text)
   gives only the message. Other records (alerts, reviews) are skipped.
2. a verdict: the recorded one, re-judged by the engine that gave it when that engine is the
   new config's primary (:meth:`Engine.rejudge`: e.g. new thresholds on the recorded score; no
   engine call), else the new engine chain is asked (``ask``). ``rescore`` asks for every line.
   Verdicts are obtained concurrently, a window of lines at a time.
3. a decision: :data:`Decide`, called once per line **in file order**, so a stateful step (an
   escalation ladder counting strikes in memory) sees the lines as they happened. The default is
   the policy's ``decide``; :func:`replay` takes any other.
"""

from __future__ import annotations

import inspect
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import trio

from chatmod.core.interfaces import Engine
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.text import printable
from chatmod.errors import InputError
from chatmod.protocols.lines import decode_line, parse_input_record

REPLAY_SOURCE = "replay"
# Lines whose verdicts are obtained at once before they are decided in order.
REPLAY_WINDOW = 1024
# Engine calls under way at once.
REPLAY_CONCURRENCY = 64
# Examples kept per change (old -> new).
EXAMPLES_PER_CHANGE = 3
# Routes whose verdict is not the engine's own answer: never reused.
DEGRADED_ROUTES = frozenset({"fallback", "failopen", "failclosed"})
NO_ACTION_RECORDED = "-"

# The policy's decision for a message and its verdict; async when it escalates (strikes).
Decide = Callable[[Message, Verdict], Decision | Awaitable[Decision]]
Ask = Callable[[Message], Awaitable[Verdict]]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One replayable line: the message, and for a decision line what was decided then."""

    line: int
    message: Message
    verdict: Verdict | None = None
    action: str | None = None
    ts: float | None = None  # when it was decided (the decision line's ``ts``)
    step: str | None = None  # the escalation ladder's step taken then, if any


@dataclass
class ReplayClock:
    """The time escalation sees during a replay: the recorded ``ts`` of the line being
    decided (so strike windows run as they did), else the time of the last line that had one."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


def parse_replay_line(data: bytes, line: int) -> Recorded | None:
    """A decision line or a raw chat line; None for a blank line or a record that is not a
    message (``{"type": "alert"}``, ``{"type": "review"}``); :class:`InputError` otherwise."""
    text, _replaced = decode_line(data)
    if not text.strip():
        return None
    if not text.lstrip().startswith("{"):
        return Recorded(line, Message(id=f"line-{line}", text=text, source=REPLAY_SOURCE))
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"line {line}: invalid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InputError(f"line {line}: expected a JSON object")
    if "type" in record:
        return None
    if "action" in record and "verdict" in record:
        return _decision_line(record, line)
    try:
        message = parse_input_record(record, REPLAY_SOURCE)
    except InputError as exc:
        raise InputError(f"line {line}: {exc}") from None
    return Recorded(line, message)


def _decision_line(record: dict[str, Any], line: int) -> Recorded:
    def string(key: str, default: str | None = None) -> str | None:
        value = record.get(key, default)
        if value is None or isinstance(value, str):
            return value
        raise InputError(f"line {line}: {key!r} must be a string, found {type(value).__name__}")

    verdict_action, action, engine = string("verdict"), string("action"), string("engine")
    if verdict_action is None or action is None or engine is None:
        raise InputError(f"line {line}: a decision line needs 'verdict', 'action' and 'engine'")
    score = record.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise InputError(f"line {line}: 'score' must be a number, found {type(score).__name__}")
    scores = record.get("scores") or {}
    if not isinstance(scores, dict):
        raise InputError(f"line {line}: 'scores' must be an object")
    message = Message(id=string("id") or f"line-{line}", text=string("text") or "",
                      source=string("source") or REPLAY_SOURCE, author=string("author"),
                      channel=string("channel"))
    verdict = Verdict(verdict_action, None if score is None else float(score), engine,
                      string("route") or "", scores)
    return Recorded(line, message, verdict, action, _timestamp(record.get("ts")),
                    string("step"))


def _timestamp(value: object) -> float | None:
    """A decision line's ``ts`` (``2026-11-22T02:39:43.123Z``) as seconds; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Example:
    line: int
    id: str
    channel: str | None
    text: str
    old_verdict: str | None
    new_verdict: str
    score: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.id, "channel": self.channel, "text": self.text,
                "old_verdict": self.old_verdict, "new_verdict": self.new_verdict,
                "score": self.score}


@dataclass
class ReplayReport:
    """What replaying changed. A change is a decision line whose action differs now."""

    lines: int = 0
    decision_lines: int = 0
    chat_lines: int = 0
    skipped: int = 0
    invalid: int = 0
    reused: int = 0
    engine_calls: int = 0
    changed: int = 0
    new_actions: Counter[str] = field(default_factory=Counter)
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_channel: defaultdict[str, Counter[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(Counter))
    by_rule: defaultdict[str, Counter[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(Counter))
    examples: defaultdict[tuple[str, str], list[Example]] = field(
        default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report for ``--json``."""
        def changes(counter: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
            return [{"old": old, "new": new, "count": n}
                    for (old, new), n in sorted(counter.items(), key=lambda kv: -kv[1])]

        return {
            "lines": self.lines, "decision_lines": self.decision_lines,
            "chat_lines": self.chat_lines, "skipped": self.skipped, "invalid": self.invalid,
            "reused": self.reused, "engine_calls": self.engine_calls, "changed": self.changed,
            "new_actions": dict(self.new_actions), "changes": changes(self.changes),
            "by_channel": {c: changes(n) for c, n in sorted(self.by_channel.items())},
            "by_rule": {r: changes(n) for r, n in sorted(self.by_rule.items())},
            "examples": [{"old": old, "new": new, "examples": [e.as_dict() for e in found]}
                         for (old, new), found in self.examples.items()],
            "errors": self.errors[:20],
        }

    def lines_of_text(self) -> Iterable[str]:
        """The report for people."""
        yield (f"replayed {self.lines} line(s): {self.decision_lines} decision(s), "
               f"{self.chat_lines} chat line(s), {self.skipped} skipped, "
               f"{self.invalid} unreadable")
        yield f"verdicts: {self.reused} reused, {self.engine_calls} engine call(s)"
        yield f"actions that would change: {self.changed} of {self.decision_lines}"
        for (old, new), n in self.changes.most_common():
            yield f"  {old} -> {new}: {n}"
        for title, table in (("by channel", self.by_channel), ("by rule", self.by_rule)):
            if table:
                yield f"{title}:"
            for key, counter in sorted(table.items()):
                moves = ", ".join(f"{o} -> {n}: {c}" for (o, n), c in counter.most_common())
                yield f"  {key}: {moves}"
        if self.examples:
            yield "examples:"
        for (old, new), found in self.examples.items():
            for e in found:
                score = "-" if e.score is None else f"{e.score:g}"
                yield (f"  {old} -> {new}: line {e.line} {e.id} {e.channel or '-'} "
                       f"(verdict {e.old_verdict} -> {e.new_verdict}, score {score}) "
                       f"{printable(e.text, 80)!r}")
        if self.chat_lines:
            yield "chat lines decided: " + ", ".join(
                f"{action} {n}" for action, n in self.new_actions.most_common())
        for error in self.errors[:20]:
            yield f"unreadable: {error}"


def reusable(recorded: Recorded, primary: Engine[Any], rescore: bool) -> Verdict | None:
    """The recorded verdict as the new primary engine would give it, or None to ask."""
    verdict = recorded.verdict
    if rescore or verdict is None or verdict.engine != primary.name:
        return None
    if verdict.route in DEGRADED_ROUTES:
        return None
    return primary.rejudge(verdict)


async def replay(
    lines: AsyncIterable[tuple[int, bytes]] | Iterable[tuple[int, bytes]],
    primary: Engine[Any],
    ask: Ask,
    decide: Decide,
    *,
    rescore: bool = False,
    rule_of: Callable[[Decision], str] = lambda d: f"verdict {d.verdict.action}",
    window: int = REPLAY_WINDOW,
    clock: ReplayClock | None = None,
) -> ReplayReport:
    """Replay numbered lines; verdicts from :func:`reusable` or ``ask``, decisions from
    ``decide`` in line order (``clock`` set to each line's recorded time first)."""
    report = ReplayReport()
    batch: list[Recorded] = []

    async def flush() -> None:
        verdicts = await _verdicts(batch, primary, ask, rescore, report)
        for recorded, verdict in zip(batch, verdicts, strict=True):
            if clock is not None and recorded.ts is not None:
                clock.now = recorded.ts
            decision = decide(recorded.message, verdict)
            if inspect.isawaitable(decision):
                decision = await decision
            _tally(report, recorded, decision, rule_of)
        batch.clear()

    async def take(number: int, data: bytes) -> None:
        report.lines += 1
        try:
            recorded = parse_replay_line(data, number)
        except InputError as exc:
            report.invalid += 1
            report.errors.append(str(exc))
            return
        if recorded is None:
            report.skipped += 1
            return
        batch.append(recorded)
        if len(batch) >= window:
            await flush()

    if isinstance(lines, AsyncIterable):
        async for number, data in lines:
            await take(number, data)
    else:
        for number, data in lines:
            await take(number, data)
    await flush()
    return report


async def _verdicts(batch: list[Recorded], primary: Engine[Any], ask: Ask, rescore: bool,
                    report: ReplayReport) -> list[Verdict]:
    found: list[Verdict | None] = [reusable(r, primary, rescore) for r in batch]
    report.reused += sum(v is not None for v in found)
    missing = [i for i, v in enumerate(found) if v is None]
    if missing:
        limiter = trio.CapacityLimiter(REPLAY_CONCURRENCY)

        async def ask_one(i: int) -> None:
            async with limiter:
                found[i] = await ask(batch[i].message)

        async with trio.open_nursery() as nursery:
            for i in missing:
                nursery.start_soon(ask_one, i)
        report.engine_calls += len(missing)
    return [v for v in found if v is not None]


def outcome(action: str, step: str | None) -> str:
    """What a decision did, as replay compares it: the action, and the ladder's step."""
    return action if step is None else f"{action} ({step})"


def _tally(report: ReplayReport, recorded: Recorded, decision: Decision,
           rule_of: Callable[[Decision], str]) -> None:
    new = outcome(decision.action, decision.step)
    report.new_actions[new] += 1
    if recorded.action is None:
        report.chat_lines += 1
        return
    report.decision_lines += 1
    old = outcome(recorded.action, recorded.step)
    if old == new:
        return
    change = (old, new)
    report.changed += 1
    report.changes[change] += 1
    report.by_channel[recorded.message.channel or NO_ACTION_RECORDED][change] += 1
    report.by_rule[rule_of(decision)][change] += 1
    examples = report.examples[change]
    if len(examples) < EXAMPLES_PER_CHANGE:
        message = recorded.message
        examples.append(Example(recorded.line, message.id, message.channel, message.text,
                                recorded.verdict.action if recorded.verdict else None,
                                decision.verdict.action, decision.verdict.score))
