"""The websocket route's per-message fast paths (issue 14, round 3), against what they replace.

- Reply parsing: :func:`parse_ws_reply`'s fast path for the usual reply (msgspec reading
  only the parts a decision needs, since round 4; no finite test on floats, no call per
  group) gives exactly what the parser before it gave (kept here verbatim as the oracle),
  for every input hypothesis makes (300 examples, 10,000 with ``HYPOTHESIS_PROFILE=thorough``),
  number literals as JSON spells them included; :func:`parse_http_reply` too (the same
  fast path, since round 4). The one difference: a number beyond a double's range in a part
  chatmod does not read no longer voids the reply.
- orjson and msgspec never make a non-finite float (what lets the fast paths skip the test).
- Stray replies (duplicate, late, unknown) told apart as before with nothing written down
  per answered reply.
- The settle path without a callable per message: a websocket request's in-flight entry holds
  its answer; the first answer wins, the window slot comes back once, the routes are counted
  once, the held-too-long net and stopping still fail what is held.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import msgspec
import orjson
import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.chatsight import inflight
from chatmod.chatsight.inflight import InFlight, InFlightTable
from chatmod.chatsight.protocol import (
    KNOWN_ACTIONS,
    SCORE_GROUPS,
    TEXT_NUMBER_MAX_LENGTH,
    ChatsightResult,
    Reply,
    _text_number,
    action_name,
    parse_http_reply,
    parse_ws_reply,
)
from chatmod.chatsight.websocket import ChatsightSocket, SocketSettings
from chatmod.config.schema import Secret
from chatmod.core.backoff import Backoff
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError, ProtocolError
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine
from chatmod.protocols.replies import as_number, json_object

from .test_chatsight_fastpath import BENCH_REPLY, SHAPED_REPLIES
from .test_fuzz_replies import CHATSIGHT_DOC, JSON, fuzz, mutated

# ---------------------------------------------------------------------------------------------
# The oracle: parse_ws_reply, parse_result and _numbers as they were before this round
# (main 1e50d7e), unchanged.


def old_numbers(values: dict[Any, Any]) -> dict[Any, float]:
    numbers: dict[Any, float] = {}
    for key, value in values.items():
        kind = type(value)
        if kind is float:
            if value - value == 0.0:  # finite (NaN or infinity give NaN)
                numbers[key] = value
            continue
        if kind is bool or value is None:
            continue
        number = (_text_number(value) if kind is str and len(value) <= TEXT_NUMBER_MAX_LENGTH
                  else as_number(value))
        if number is not None:
            numbers[key] = number
    return numbers


def old_parse_result(response: Any) -> ChatsightResult:
    if not isinstance(response, dict):
        raise ProtocolError(f"'response' is {type(response).__name__}, not an object")
    suggested = response.get("suggestedAction")
    if isinstance(suggested, str):
        action, raw_score = suggested, None
    elif isinstance(suggested, list) and suggested and isinstance(suggested[0], str):
        action = suggested[0]
        raw_score = suggested[1] if len(suggested) > 1 else None
    else:
        raise ProtocolError("no suggestedAction in the reply")
    scores: dict[str, Any] = {}
    for group in SCORE_GROUPS:
        values = response.get(group)
        if isinstance(values, dict) and values:
            numbers = old_numbers(values)
            if numbers:
                scores[group] = numbers
    finite = type(raw_score) is float and raw_score - raw_score == 0.0
    score = raw_score if finite else as_number(raw_score)
    return ChatsightResult(
        action if action in KNOWN_ACTIONS else action_name(action), score, scores)


def old_parse_ws_reply(data: bytes | str) -> Reply:
    envelope = json_object(data, ProtocolError)
    response = envelope.get("response")
    reference = None
    if isinstance(response, dict):
        metadata = response.get("metadata")
        if isinstance(metadata, dict):
            raw = metadata.get("self_reference")
            if type(raw) is str:
                reference = raw
            elif isinstance(raw, (str, int)) and not isinstance(raw, bool):
                reference = str(raw)
    if envelope.get("success") is False:
        detail = response if isinstance(response, str) else "success: false"
        return Reply(reference, None, str(detail)[:200])
    try:
        return Reply(reference, old_parse_result(response))
    except ProtocolError as exc:
        if reference is None:
            raise
        return Reply(reference, None, str(exc))


def old_parse_http_reply(data: bytes | str) -> ChatsightResult:
    envelope = json_object(data, ProtocolError)
    if envelope.get("success") is False:
        detail = envelope.get("response")
        raise ProtocolError(f"Chatsight answered success: false ({str(detail)[:200]})")
    return old_parse_result(envelope.get("response"))


def http_outcome(parse: Any, data: bytes | str) -> tuple[Any, ...]:
    """:func:`outcome` of an HTTP reply's parser (a result, no reply around it)."""
    return outcome(lambda raw: Reply(None, parse(raw)), data)


def outcome(parse: Any, data: bytes | str) -> tuple[Any, ...]:
    try:
        reply = parse(data)
    except ProtocolError as exc:
        return ("error", str(exc))
    result = reply.result
    # As the decision line spells them: -0.0 is not 0.0, 2.0 is not 2, order counts.
    found = None if result is None else (
        result.action, orjson.dumps(result.score), orjson.dumps(result.scores))
    return ("reply", reply.reference, found, reply.error)


# ---------------------------------------------------------------------------------------------
# Parsing

# The usual reply's shape with any reference and score: the fast path's own inputs.
USUAL = st.fixed_dictionaries({"response": st.fixed_dictionaries({
    "suggestedAction": st.tuples(st.sampled_from(["pass", "flag", "Delete ", "shrug", ""]),
                                 st.floats(allow_nan=False, allow_infinity=False)
                                 | st.integers(-5, 5) | st.text(max_size=4)).map(list),
    "metadata": st.fixed_dictionaries({"self_reference": st.text(max_size=8)
                                       | st.integers(-3, 3) | st.none()}),
}, optional={group: st.dictionaries(st.text(max_size=6), JSON, max_size=6)
             for group in SCORE_GROUPS})}, optional={"success": st.booleans() | st.none()})


def as_bytes(value: Any) -> bytes:
    return orjson.dumps(value)


@fuzz
@given(USUAL.map(as_bytes) | SHAPED_REPLIES.map(as_bytes) | mutated(CHATSIGHT_DOC).map(as_bytes)
       | JSON.map(as_bytes) | st.binary(max_size=64))
@example(as_bytes(BENCH_REPLY))
@example(b'{"response": {"suggestedAction": ["pass", 0.5], "metadata": {"self_reference": 7}}}')
@example(b'{"response": {"suggestedAction": ["pass", 0.5], "metadata": {}}}')
@example(b'{"response": {"suggestedAction": ["Delete ", 0.5], "metadata": '
         b'{"self_reference": "r"}, "engine1": {"a": "0.5", "b": true, "c": null, "d": 2}}}')
@example(b'{"success": false, "response": {"suggestedAction": ["pass", 0.5], '
         b'"metadata": {"self_reference": "r"}}}')
@example(b'[{"response": {}}]')
@example('{"response": {"suggestedAction": ["pass", 0.5], "metadata": {"self_reference": '
         '"\ud800"}}}')  # a text no UTF-8 spells (msgspec cannot take it): orjson's reading
def test_the_fast_parser_reads_every_reply_as_the_one_before_it(data: bytes | str) -> None:
    assert outcome(parse_ws_reply, data) == outcome(old_parse_ws_reply, data)
    # HTTP's replies have the same shape and take the same fast path (since round 4).
    assert http_outcome(parse_http_reply, data) == http_outcome(old_parse_http_reply, data)


# Number texts at and beyond a double's range: orjson refuses what would not be finite.
NUMBER_LITERALS = (
    st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.builds(lambda m, e: f"{m}e{e}", st.integers(-(10**6), 10**6), st.integers(-400, 400))
    | st.builds(lambda digits, fraction: digits + fraction,
                st.text("0123456789", min_size=1, max_size=400).map(lambda d: "1" + d),
                st.sampled_from(["", ".0", ".5e10", "e-5"]))
    | st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1e400",
                       "1.7976931348623157e308", "1.7976931348623159e308", "4.9e-324",
                       "18446744073709551616", "-9223372036854775809"]))


@fuzz
@given(NUMBER_LITERALS)
@example("1" + "0" * 309)
@example("1" + "0" * 308 + ".0")
def test_orjson_and_msgspec_never_make_a_non_finite_float(literal: str) -> None:
    for document in (literal, f'{{"a": {literal}}}', f"[{literal}]"):
        try:
            value = orjson.loads(document)
        except orjson.JSONDecodeError:
            continue
        number = value if not isinstance(value, (dict, list)) else (
            value["a"] if isinstance(value, dict) else value[0])
        assert type(number) in (int, float)
        assert math.isfinite(number)
    # msgspec, read as the fast path reads: a float where Any is typed (an integer stays a
    # Python int, which the fast path does not take), and as a score group's value.
    try:
        number = msgspec.json.decode(f"[{literal}]")[0]
    except msgspec.MsgspecError:
        pass
    else:
        assert type(number) is int or math.isfinite(number)
    try:
        group = msgspec.json.decode(f'{{"a": {literal}}}', type=dict[str, float | str | bool | None])
    except msgspec.MsgspecError:
        pass
    else:
        assert type(group["a"]) is float
        assert math.isfinite(group["a"])


# A usual reply spelled as text, its numbers as any JSON literal (orjson.dumps spells a float
# one way only): the score, the score groups' values and a part chatmod does not read.
LITERAL_VALUES = NUMBER_LITERALS | st.sampled_from(
    ['"0.5"', '"Not required in engine2"', '" 1 "', '"1e999"', "true", "null", "-0", "0",
     "2", "-0.0", "1e-400", "-1e-400", "5e-324", "{}", "[]", '{"a": 1}'])


def json_object_text(literals: dict[str, str]) -> str:
    """A JSON object, each value the literal text given."""
    return "{" + ", ".join(f'"{key}": {value}' for key, value in literals.items()) + "}"


@st.composite
def literal_replies(draw: st.DrawFn) -> tuple[str, str]:
    """A usual reply as text with literal numbers, and the same reply without ``patches``."""
    groups = draw(st.dictionaries(st.sampled_from(SCORE_GROUPS), st.dictionaries(
        st.sampled_from(["a", "b", "baseline", "c"]), LITERAL_VALUES, max_size=4), max_size=3))
    body = ", ".join(f'"{group}": {json_object_text(values)}' for group, values in groups.items())
    score = draw(NUMBER_LITERALS | st.sampled_from(["0.1", "-0", "1", "-0.0"]))
    read = (f'"suggestedAction": ["pass", {score}], "metadata": {{"self_reference": "r"}}'
            + (f", {body}" if body else ""))
    patches = draw(NUMBER_LITERALS)
    return (f'{{"success": true, "response": {{{read}, "patches": {{"p": {patches}}}}}}}',
            f'{{"success": true, "response": {{{read}}}}}')


@fuzz
@given(literal_replies())
@example(('{"response": {"suggestedAction": ["pass", 0.1], "metadata": {"self_reference": "r"},'
          ' "patches": 1e400}}',
          '{"response": {"suggestedAction": ["pass", 0.1], "metadata": {"self_reference": "r"}}}'))
@example(('{"response": {"suggestedAction": ["pass", -0], "metadata": {"self_reference": "r"},'
          ' "engine1": {"a": -1e-400, "b": 18446744073709551616, "c": -0}}}',) * 2)
def test_number_literals_are_read_as_before_but_in_parts_not_read(
        replies: tuple[str, str]) -> None:
    whole, without_unread = replies
    for read, old_read in ((outcome, old_parse_ws_reply), (http_outcome, old_parse_http_reply)):
        parse = parse_ws_reply if read is outcome else parse_http_reply
        new = read(parse, whole)
        old = read(old_read, whole)
        if new != old:
            # orjson refused the document for a number beyond a double's range that chatmod
            # does not read; msgspec skips it unbuilt: the reply reads as it does without it.
            assert old == ("error", "reply is not JSON")
            assert new == read(old_read, without_unread)
            with pytest.raises(msgspec.ValidationError, match="out of range"):
                msgspec.json.decode(whole)
        assert read(parse, whole.encode()) == new  # bytes read as the text is


# ---------------------------------------------------------------------------------------------
# Settling through the in-flight entry


def engine_and_entry() -> tuple[ChatsightEngine, InFlight, list[tuple[int, Any]]]:
    engine = ChatsightEngine("chatsight", ChatsightConfig(api_key=Secret("t", "key")))
    told: list[tuple[int, Any]] = []
    message = Message(id="m-1", text="hello", source="test")
    engine._window.force(1)  # as _start's callers take a slot
    entry = engine.race.sent_over_ws(message, 0.0, 1, None,
                                     lambda index, result: told.append((index, result)), 7)
    engine._outstanding[entry] = 0.0  # as _start does
    return engine, entry, told


def test_an_entry_is_settled_by_its_first_answer_only() -> None:
    engine, entry, told = engine_and_entry()
    free = engine._window.free
    answer = Verdict("pass", 0.1, "chatsight", "ws")
    assert engine._on_reply(Reply(entry.reference, ChatsightResult("pass", 0.1, {}))) == (
        "answered")
    assert told == [(7, answer)]
    assert engine._window.free == free + 1  # released once
    assert entry not in engine._outstanding
    assert engine.routes == {"ws": 1}
    # Every later answer is dropped: HTTP's (counted), the safety net's, a duplicate reply.
    settle = engine._entry_settle(entry)
    assert not engine.race.http_answered(entry, settle, EngineError("late"))
    assert engine.race.stats["http_answers_dropped"] == 1
    engine._fail_held(entry, EngineError("held too long"))
    assert engine._on_reply(Reply(entry.reference, ChatsightResult("flag", 1.0, {}))) == (
        "duplicate")
    assert told == [(7, answer)]
    assert engine._window.free == free + 1
    assert engine.routes == {"ws": 1}


def test_an_entry_failed_by_the_safety_net_ignores_its_late_reply() -> None:
    engine, entry, told = engine_and_entry()
    free = engine._window.free
    engine._fail_held(entry, EngineError("no answer within 1 s"))
    assert [(index, type(result)) for index, result in told] == [(7, EngineError)]
    assert engine._window.free == free + 1
    assert engine._outstanding == {}
    # Out of the table too (no memory held, not counted in flight): its reply is a late stray,
    # and changes nothing.
    assert len(engine.table) == 0
    assert engine.statistics()["in_flight"] == 0
    assert engine._on_reply(Reply(entry.reference, ChatsightResult("pass", 0.1, {}))) == (
        "late")
    assert len(told) == 1
    assert engine._window.free == free + 1
    assert engine.routes == {}  # an error is no route's verdict


def test_http_answering_an_entry_settles_it_through_its_answer() -> None:
    engine, entry, told = engine_and_entry()
    settle = engine._entry_settle(entry)
    verdict = Verdict("flag", 0.9, "chatsight", "http")
    assert engine.race.http_answered(entry, settle, verdict)
    assert told == [(7, verdict)]
    assert engine.routes == {"http": 1}
    assert engine._on_reply(Reply(entry.reference, ChatsightResult("pass", 0.1, {}))) == (
        "late")
    assert told == [(7, verdict)]


def test_one_reads_replies_are_settled_together_as_one_by_one() -> None:
    """The socket hands a read's usual replies over at once: each entry's first answer, the
    slots freed together, the routes counted, a racing request's HTTP call called off, and
    the strays (a second reply in the same read, a reference never sent) returned."""
    engine, first, told = engine_and_entry()
    engine._window.force(1)
    second = engine.race.sent_over_ws(Message(id="m-2", text="hi", source="test"), 0.0, 1,
                                      None, lambda index, result: told.append((index, result)),
                                      8)
    engine._outstanding[second] = 0.0
    second.racing = True
    second.http_scope = trio.CancelScope()
    free = engine._window.free
    strays = engine._on_answers([
        (first.reference, "pass", 0.1, {}),
        (first.reference, "flag", 0.9, {}),
        ("someone-else", "pass", 0.1, {}),
        (second.reference, "delete", 1.0, {"engine1": {"vulgar": 1.0}}),
    ])
    assert strays == [(first.reference, "duplicate"), ("someone-else", "unknown")]
    assert told == [(7, Verdict("pass", 0.1, "chatsight", "ws")),
                    (8, Verdict("delete", 1.0, "chatsight", "ws", {"engine1": {"vulgar": 1.0}}))]
    assert engine._window.free == free + 2
    assert engine._outstanding == {}
    assert engine.routes == {"ws": 2}
    assert second.http_scope.cancel_called
    assert engine.race.stats["ws_won_race"] == 1


def test_the_verdicts_of_one_list_are_told_together_in_the_order_they_came() -> None:
    engine = ChatsightEngine("chatsight", ChatsightConfig(api_key=Secret("t", "key")))
    calls: list[tuple[str, list[int]]] = []

    def list_of(name: str) -> Any:
        def answers(told: list[tuple[int, Verdict]]) -> None:
            calls.append((name, [index for index, _ in told]))
        return answers

    first_list, second_list = list_of("first"), list_of("second")
    entries = []
    for index, answers in enumerate([first_list, first_list, second_list, first_list]):
        engine._window.force(1)
        entry = engine.race.sent_over_ws(Message(id=f"m-{index}", text="t", source="test"),
                                         0.0, 1, None, inflight.no_answer, index)
        entry.answers = answers
        engine._outstanding[entry] = 0.0
        entries.append(entry)
    free = engine._window.free
    replies = [(entry.reference, "pass", 0.1, {}) for entry in entries]
    assert engine._on_answers(replies + replies[:1]) == [(entries[0].reference, "duplicate")]
    assert calls == [("first", [0, 1]), ("second", [2]), ("first", [3])]
    assert engine._window.free == free + 4
    assert engine.routes == {"ws": 4}


def test_a_failing_answer_callback_leaves_the_other_replies_answered() -> None:
    engine, first, told = engine_and_entry()

    def broken(index: int, result: object) -> None:
        raise RuntimeError("a defect in the stage")

    first.answer = broken
    engine._window.force(1)
    second = engine.race.sent_over_ws(Message(id="m-2", text="hi", source="test"), 0.0, 1,
                                      None, lambda index, result: told.append((index, result)),
                                      8)
    engine._outstanding[second] = 0.0
    free = engine._window.free
    assert engine._on_answers([(first.reference, "pass", 0.1, {}),
                               (second.reference, "pass", 0.1, {})]) == []
    assert told == [(8, Verdict("pass", 0.1, "chatsight", "ws"))]
    assert engine._window.free == free + 2  # neither slot is lost
    assert engine.stats["answer_failures"] == 1


@pytest.mark.parametrize("settled_first", [False, True])
async def test_an_entry_waiting_for_an_http_worker_is_not_sent_once_answered(
    settled_first: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, entry, told = engine_and_entry()
    asked: list[str] = []

    async def http_result(message: Message, metadata: Any, deadline: float) -> Verdict:
        asked.append(message.id)
        return Verdict("flag", 0.9, "chatsight", "http")

    monkeypatch.setattr(engine, "_http_result", http_result)
    if settled_first:
        engine._on_reply(Reply(entry.reference, ChatsightResult("pass", 0.1, {})))
    with trio.fail_after(5):
        await engine._over_http(entry.message, engine._entry_settle(entry), entry, None, 10.0)
    assert asked == ([] if settled_first else ["m-1"])
    assert [result.route for _, result in told] == ["ws" if settled_first else "http"]


# ---------------------------------------------------------------------------------------------
# Strays told apart with no write per answered reply


class OldTable:
    """InFlightTable's bookkeeping of settled references before this round (main 1e50d7e):
    each one answered or abandoned written down, the oldest forgotten first."""

    def __init__(self, prefix: str, remembered: int) -> None:
        self.prefix, self.remembered, self.count = prefix, remembered, 0
        self.entries: set[str] = set()
        self.settled: OrderedDict[str, str] = OrderedDict()

    def add(self) -> str:
        self.count += 1
        reference = f"{self.prefix}-{self.count}"
        self.entries.add(reference)
        return reference

    def take(self, reference: str | None) -> str:
        if reference is None:
            return "unknown"
        if reference in self.entries:
            self.entries.remove(reference)
            self.remember(reference, "answered")
            return "entry"
        earlier = self.settled.get(reference)
        if earlier is None:
            return "unknown"
        return "duplicate" if earlier == "answered" else "late"

    def abandon(self, reference: str) -> None:
        if reference in self.entries:
            self.entries.remove(reference)
            self.remember(reference, "abandoned")

    def remember(self, reference: str, how: str) -> None:
        self.settled[reference] = how
        if len(self.settled) > self.remembered:
            self.settled.popitem(last=False)


def odd_reference(prefix: str) -> st.SearchStrategy[str | None]:
    """References a peer could send that are not one of ours as we spell them."""
    return (st.none() | st.text(max_size=10)
            | st.sampled_from(["0", "00", "+1", " 1", "1 ", "٣", "1_0", "-1", "1.0", "1e0", ""])
            .map(lambda tail: f"{prefix}-{tail}")
            | st.integers(0, 5).map(lambda n: f"{prefix}-0{n}")
            | st.integers(0, 5).map(lambda n: f"x{prefix}-{n}"))


@fuzz
@given(st.data())
def test_strays_are_told_apart_as_before_while_none_is_forgotten(data: st.DataObject) -> None:
    table = InFlightTable()
    old = OldTable(table._prefix, remembered=10_000)
    references: list[str] = []
    entries: dict[str, InFlight] = {}
    message = Message(id="m", text="t", source="test")
    for _ in range(data.draw(st.integers(0, 60))):
        operation = data.draw(st.sampled_from(["add", "take", "abandon", "odd", "future",
                                               "many"]))
        if operation == "add" or not references:
            entry = table.add(message, 1.0, 1, None)
            assert entry.reference == old.add()
            references.append(entry.reference)
            entries[entry.reference] = entry
            continue
        if operation == "many":  # one read's replies, some twice
            read = data.draw(st.lists(st.sampled_from(references), max_size=4))
            for replied, found in zip(read, table.take_many(read), strict=True):
                assert (found if isinstance(found, str) else "entry") == old.take(replied)
            continue
        sent: str = data.draw(st.sampled_from(references))
        if operation == "abandon":
            table.abandon(entries[sent])
            old.abandon(sent)
            continue
        reference: str | None = sent
        if operation == "odd":
            reference = data.draw(odd_reference(table._prefix))
        elif operation == "future":
            reference = f"{table._prefix}-{len(references) + data.draw(st.integers(1, 3))}"
        found = table.take(reference)
        assert (found if isinstance(found, str) else "entry") == old.take(reference)
        if not isinstance(found, str):
            assert found is entries[found.reference]


def test_only_the_latest_references_sent_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inflight, "REMEMBERED_REFERENCES", 4)
    table = InFlightTable()
    message = Message(id="m", text="t", source="test")
    entries = [table.add(message, 1.0, 1, None) for _ in range(6)]
    assert table.take(entries[5].reference) is entries[5]  # answered last: still told
    table.abandon(entries[4])
    for entry in entries[:4]:
        assert table.take(entry.reference) is entry
    # Sent 6, the latest 4 (3 to 6) told apart; 1 and 2 were answered but are too old.
    assert [table.take(e.reference) for e in entries] == [
        "unknown", "unknown", "duplicate", "duplicate", "late", "duplicate"]
    assert table.take(f"{table._prefix}-7") == "unknown"  # not sent yet
    assert table.take(f"{table._prefix}-0") == "unknown"  # never: the first is 1
    assert len(table._abandoned) == 1


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
def test_an_integer_beyond_a_double_is_not_a_score(value: int) -> None:
    # msgspec (and TOML) keep such a number as a Python int, which float() cannot take.
    assert as_number(value) is None
    assert as_number(2**1023) == float(2**1023)


def test_a_reads_replies_reach_the_engine_in_the_order_they_came() -> None:
    """The usual replies before another kind (an error reply) are handed over first, and
    every reply is counted once: answered, stray or invalid."""
    calls: list[Any] = []

    def on_answers(answers: list[Any]) -> list[tuple[str, str]]:
        calls.append([answer[0] for answer in answers])
        return [(reference, "unknown") for reference, *_ in answers if reference == "stray"]

    def on_reply(reply: Reply) -> str:
        calls.append(reply.reference)
        return "failed"

    settings = SocketSettings(url="ws://127.0.0.1:9/text/moderation", api_key="k",
                              subprotocol=None, connect_timeout=1, ping_interval=10,
                              ping_timeout=5, auth_cut_window=1, auth_backoff=1)

    async def key_refused() -> bool:
        return False

    socket = ChatsightSocket(settings, Backoff(1, 2), on_reply=on_reply,
                             on_closed=lambda connection: 0, key_refused=key_refused,
                             on_answers=on_answers)

    def usual(reference: str) -> str:
        return orjson.dumps({"success": True, "response": {
            "suggestedAction": ["pass", 0.1], "metadata": {"self_reference": reference}}}).decode()

    error = orjson.dumps({"success": False, "response": "overloaded",
                          "metadata": {"self_reference": "b"}}).decode()
    socket._handle_texts([usual("a"), error, usual("c"), "not json", usual("stray")])
    assert calls == [["a"], None, ["c", "stray"]]
    assert socket.stats == {"replies": 4, "replies_failed": 1, "replies_unknown": 1,
                            "invalid_replies": 1}
