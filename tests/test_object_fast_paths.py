"""Differential tests of the pipeline's cheaper object creation (issue 14, round 3): the
frozen dataclasses' ``__init__`` (:func:`chatmod.core.quick.quick_init`) must build exactly
what the dataclass's own ``__init__`` built, frozen as before; the policy's batch
(:meth:`~chatmod.policy.rules.Policy.decide_many`) must decide each message as
:meth:`~chatmod.policy.rules.Policy.decide` does (the reference kept in
tests/test_decision_fast_paths.py); the input lines' batch
(:func:`~chatmod.protocols.lines.parse_input_lines`) must make what the stdin source made of
each line (the reference kept in tests/test_input_fast_paths.py).

The 10,000-example run: ``HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest
tests/test_object_fast_paths.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import pickle
from collections.abc import Sequence
from typing import Any

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.config.sections import ChannelPolicy, PolicySection
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import (
    BatchResultCallback,
    Engine,
    ResultCallback,
    StreamingEngine,
)
from chatmod.core.latency import LatencyHistograms
from chatmod.core.model import (
    Decision,
    Message,
    Verdict,
    new_decision,
    new_message,
    new_verdict,
)
from chatmod.core.pipeline import Pipeline
from chatmod.core.quick import quick_init
from chatmod.errors import InputError
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy
from chatmod.protocols.lines import (
    FramedLines,
    LineFramer,
    OversizedLine,
    parse_input_lines,
)
from chatmod.runtime.stats_store import DecisionStats

from .helpers import ListSource, RecordingSink
from .per_line import Line
from .test_decision_fast_paths import (
    actions_said,
    latencies,
    policy_sections,
    reference_decide,
    reference_lines,
    verdicts,
)
from .test_decision_fast_paths import messages as decision_messages
from .test_input_fast_paths import (
    default_channels,
    encoded_lines,
    framed_lines,
    normalised,
    outcome,
    reference_stdin_line,
)


def reference_build(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
    """What the dataclass's generated ``__init__`` does: bind the arguments to the fields
    (defaults, factories), then ``object.__setattr__`` per field."""
    specs = dataclasses.fields(cls)
    values: dict[str, Any] = {}
    for spec, value in zip(specs, args, strict=False):
        values[spec.name] = value
    for name, value in kwargs.items():
        assert name not in values, name
        values[name] = value
    instance = object.__new__(cls)
    for spec in specs:
        if spec.name in values:
            value = values[spec.name]
        elif spec.default is not dataclasses.MISSING:
            value = spec.default
        else:
            assert spec.default_factory is not dataclasses.MISSING, spec.name
            value = spec.default_factory()
        object.__setattr__(instance, spec.name, value)
    return instance


def same_object(made: Any, reference: Any) -> None:
    assert type(made) is type(reference)
    for spec in dataclasses.fields(reference):
        assert getattr(made, spec.name) is getattr(reference, spec.name) or (
            getattr(made, spec.name) == getattr(reference, spec.name)), spec.name


optional_text = st.none() | st.text(max_size=8)
messages_args = st.fixed_dictionaries(
    {"id": st.text(max_size=8), "text": st.text(max_size=20), "source": st.text(max_size=6)},
    optional={"author": optional_text, "channel": optional_text,
              "metadata": st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
              "images": st.lists(st.text(max_size=5), max_size=2).map(tuple),
              "timestamp": optional_text, "author_account": optional_text,
              "event": st.none() | st.just("join")},
)
verdict_args = st.fixed_dictionaries(
    {"action": st.text(max_size=8), "score": st.none() | st.floats(allow_nan=False),
     "engine": st.text(max_size=6), "route": st.text(max_size=6)},
    optional={"scores": st.dictionaries(st.text(max_size=4), st.floats(), max_size=2)},
)
decision_extra = st.fixed_dictionaries(
    {}, optional={"ts": st.floats(allow_nan=False), "shadow": st.booleans(),
                  "exempt": st.booleans(), "strikes": st.none() | st.integers(0, 9),
                  "step": optional_text, "duration": st.none() | st.floats(0, 1e6),
                  "reason": optional_text, "repeated": st.booleans(),
                  "judged": optional_text},
)


@given(messages_args, verdict_args, decision_extra, st.integers(0, 3))
def test_quick_init_builds_what_the_dataclass_built(
        message_kwargs: dict[str, Any], verdict_kwargs: dict[str, Any],
        decision_kwargs: dict[str, Any], positional: int) -> None:
    # The same arguments, the first ``positional`` of them positionally.
    def split(kwargs: dict[str, Any], cls: type[Any]) -> tuple[list[Any], dict[str, Any]]:
        names = [spec.name for spec in dataclasses.fields(cls)][:positional]
        if not all(name in kwargs for name in names):
            return [], dict(kwargs)
        return [kwargs[name] for name in names], {
            name: value for name, value in kwargs.items() if name not in names}

    args, kwargs = split(message_kwargs, Message)
    message = Message(*args, **kwargs)
    same_object(message, reference_build(Message, *args, **kwargs))
    args, kwargs = split(verdict_kwargs, Verdict)
    verdict = Verdict(*args, **kwargs)
    same_object(verdict, reference_build(Verdict, *args, **kwargs))
    decision = Decision(message, verdict, "none", 1.5, **decision_kwargs)
    reference = reference_build(Decision, message, verdict, "none", 1.5, **decision_kwargs)
    if "ts" not in decision_kwargs:  # each its own wall-clock time
        assert abs(decision.ts - reference.ts) < 60
        reference = dataclasses.replace(reference, ts=decision.ts)
    same_object(decision, reference)
    assert decision == reference


@given(messages_args, verdict_args, st.floats(allow_nan=False), st.booleans(),
       optional_text, optional_text)
def test_the_quick_makers_build_what_the_dataclass_built(
        message_kwargs: dict[str, Any], verdict_kwargs: dict[str, Any], ts: float,
        shadow: bool, reason: str | None, judged: str | None) -> None:
    made_args = [message_kwargs.get(name)
                 for name in ("id", "text", "source", "author", "channel")]
    message = new_message(*made_args)
    same_object(message, reference_build(Message, *made_args))
    verdict_values = [verdict_kwargs.get(name, {}) for name in
                      ("action", "score", "engine", "route", "scores")]
    verdict = new_verdict(*verdict_values)
    same_object(verdict, reference_build(Verdict, *verdict_values))
    assert verdict == Verdict(*verdict_values)
    decision = new_decision(message, verdict, "none", 1.5, ts, shadow, reason, judged)
    same_object(decision, reference_build(Decision, message, verdict, "none", 1.5, ts, shadow,
                                          reason=reason, judged=judged))


def test_the_instances_stay_frozen_and_copyable() -> None:
    message = Message("m-1", "hi", "src", "ann", "#c")
    decision = Decision(message, Verdict("pass", 0.0, "w", "local"), "none", 0.5, 3.0)
    for instance, name in ((message, "text"), (decision, "action")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(instance, name, "changed")
    assert type(message) is Message
    assert type(decision) is Decision
    assert copy.copy(decision) == decision
    assert copy.deepcopy(message) == message
    assert pickle.loads(pickle.dumps(decision)) == decision
    assert dataclasses.replace(decision, shadow=True).shadow is True
    assert Line(3, b"x") == Line(number=3, data=b"x")
    assert OversizedLine(1, 9).size == 9
    with pytest.raises(TypeError):
        Message("only-id")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Verdict("pass", 0.0, "w", "local", {}, "extra")  # type: ignore[call-arg]


def test_a_subclass_keeps_its_class() -> None:
    class Annotated(Message):  # no __init__ of its own: the quick one runs for it
        __slots__ = ("note",)

    message = Annotated("m-1", "hi", "src")
    assert type(message) is Annotated
    assert (message.text, message.metadata) == ("hi", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"  # type: ignore[misc]


def test_quick_init_refuses_a_class_without_slots() -> None:
    @dataclasses.dataclass(frozen=True)
    class Plain:
        value: int

    with pytest.raises(AttributeError):  # no __slots__ to lend a twin
        quick_init(Plain)


# --- Policy.decide_many: each decision as Policy.decide makes it, one ts for the batch ------

POISON = Verdict(["unhashable"], None, "buggy", "local")  # type: ignore[arg-type]
# Sections the shortcut applies to (one set of rules, nothing to judge, nobody exempt), then
# any section.
plain_sections = st.builds(
    PolicySection,
    actions=st.dictionaries(actions_said, st.sampled_from(["none", "warn", "kick"]), max_size=2),
    unknown_verdict_action=st.sampled_from(["flag", "warn"]), shadow=st.booleans())
sections = plain_sections | policy_sections


def as_line(decision: Decision) -> bytes:
    return reference_lines([dataclasses.replace(decision, ts=0.0)], True)


@given(section=sections, pairs=st.lists(
    st.tuples(decision_messages, verdicts | st.just(POISON)), max_size=12),
    latency=latencies)
@example(section=PolicySection(), pairs=[(Message("m", "t", "s", "al", "#a"), POISON),
                                         (Message("n", "t", "s"), Verdict("pass", 0.0, "w",
                                                                          "local"))],
         latency=0.5)
def test_decide_many_is_decide_for_each(section: PolicySection,
                                        pairs: list[tuple[Message, Verdict]],
                                        latency: float) -> None:
    policy = Policy(section)
    expected: list[bytes] = []
    expected_failed: list[Message] = []
    for message, verdict in pairs:
        try:
            expected.append(as_line(reference_decide(policy, message, verdict, latency)))
        except TypeError:  # the poison verdict's action cannot be looked up
            expected_failed.append(message)
    failed: list[tuple[Message, Exception]] = []
    decided = policy.decide_many([m for m, _ in pairs], [v for _, v in pairs], latency, failed)
    assert [as_line(d) for d in decided] == expected
    assert [m for m, _ in failed] == expected_failed
    assert all(isinstance(exc, TypeError) for _, exc in failed)
    assert len({id(d.ts) for d in decided}) <= 1  # one float object for the batch
    if decided:
        assert decided[0].latency_ms is latency or latency != latency


def test_the_shortcut_is_for_plain_rules_only() -> None:
    assert Policy(PolicySection(shadow=True, actions={"flag": "warn"}))._plain
    for section in (PolicySection(flag_score=0.5), PolicySection(fail_mode="open"),
                    PolicySection(exempt_authors=("ann",)),
                    PolicySection(channels={"#a": ChannelPolicy()})):
        assert not Policy(section)._plain, section


def test_decide_many_asks_a_subclass_decide() -> None:
    class Counting(Policy):
        def __init__(self) -> None:
            super().__init__(PolicySection())
            self.asked: list[str] = []

        def decide(self, message: Message, verdict: Verdict, latency_ms: float) -> Decision:
            self.asked.append(message.id)
            if message.id == "bad":
                raise RuntimeError("policy bug")
            return super().decide(message, verdict, latency_ms)

    policy = Counting()
    batch = [Message(i, "t", "s") for i in ("a", "bad", "c")]
    failed: list[tuple[Message, Exception]] = []
    verdict = Verdict("pass", 0.0, "w", "local")
    decided = policy.decide_many(batch, [verdict] * 3, 1.0, failed)
    assert policy.asked == ["a", "bad", "c"]
    assert [d.message.id for d in decided] == ["a", "c"]
    assert [(m.id, str(exc)) for m, exc in failed] == [("bad", "policy bug")]
    assert policy.decide_at(batch[0], verdict, 1.0, 5.0).action == "none"
    assert policy.asked[-1] == "a"  # decide_at too goes through the subclass's decide
    with pytest.raises(ValueError, match="2 verdicts for 3 messages"):
        policy.decide_many(batch, [verdict] * 2, 1.0, failed)


@given(section=sections, message=decision_messages, verdict=verdicts,
       latency=latencies, ts=st.floats(0, 4e9))
def test_decide_at_is_decide_at_that_time(section: PolicySection, message: Message,
                                          verdict: Verdict, latency: float, ts: float) -> None:
    policy = Policy(section)
    decision = policy.decide_at(message, verdict, latency, ts)
    assert decision.ts is ts
    assert as_line(decision) == as_line(reference_decide(policy, message, verdict, latency))


# --- parse_input_lines: what the stdin source made of each line, in one loop ----------------

# Records of the usual shape and near misses (an empty id, a null or non-string author, one
# key more), where the shortcut must hand over to the general path.
usual_records = st.fixed_dictionaries(
    {"text": st.text(max_size=12) | st.none()},
    optional={"id": st.text(max_size=6) | st.integers(0, 9) | st.none(),
              "author": st.text(max_size=6) | st.none() | st.integers(0, 9),
              "channel": st.text(max_size=6) | st.none() | st.booleans(),
              "metadata": st.sampled_from([{"k": 1}, {}, None, False, [1]]),
              "images": st.sampled_from([["https://x/1.png"], [], None, "x", [1]]),
              "type": st.sampled_from(["message", None, "join", "other"])},
)
stdin_lines = framed_lines | st.builds(encoded_lines, usual_records, st.just(b""), st.booleans())


@given(datas=st.lists(stdin_lines, max_size=10), default_channel=default_channels)
@example(datas=[b'{"id":"m-1","text":"hi","author":"ann","channel":"#a"}', b"",
                b'{"id":"","text":"hi"}', b'{"id":"m","text":"x","author":null}',
                b'{"id":"m","text":"\xff"}', b"{", b'{"id":"m","text":"t","channel":"#c"}\r'],
         default_channel="#main")
# msgspec reads the usual line since round 5: duplicate keys (the last wins, as in orjson), a
# lone surrogate escape, an integer beyond 64 bits in metadata (orjson refuses the line), a
# null id, text and type, a BOM.
@example(datas=[b'{"id":"a","text":"x","id":"b","text":"y"}', b'{"text":"\\ud800"}',
                b'{"text":"t","metadata":{"k":123456789012345678901234567890}}',
                b'{"id":null,"text":"t"}', b'{"text":null}', b'{"text":"t","type":null}',
                b'\xef\xbb\xbf{"text":"t"}', b'{"text":"t","author":"a","author":1}'],
         default_channel=None)
def test_parse_input_lines_is_the_stdin_reference(datas: list[bytes],
                                                  default_channel: str | None) -> None:
    expected_messages: list[Message | None] = []
    expected_problems: list[tuple[int, str | None]] = []
    for number, data in enumerate(datas, start=7):
        kind, result = outcome(reference_stdin_line, data, default_channel)
        if kind == "error":
            expected_problems.append((number, str(result)))
            continue
        assert isinstance(result, tuple)
        message, replaced = result
        if message is not None:
            expected_messages.append(message)
            if replaced:
                expected_problems.append((number, None))
    problems: list[tuple[int, InputError | None]] = []
    made = parse_input_lines(FramedLines(7, datas, []), "stdin", default_channel, problems)
    assert [normalised(message) for message in made] == expected_messages
    assert [(number, None if error is None else str(error))
            for number, error in problems] == expected_problems
    for message in made:
        assert type(message) is Message
        assert message.metadata is not made[0].metadata or message is made[0]


# --- per-batch counting: the decisions of a batch share a ts and mostly a verdict -----------

def reference_count(decisions: list[Decision]) -> dict[int, list[int]]:
    """DecisionStats.count as it was (1e50d7e): one minute lookup per decision."""
    pending: dict[int, list[int]] = {}
    for decision in decisions:
        row = pending.setdefault(int(decision.ts) // 60 * 60, [0, 0, 0, 0])
        column = {"pass": 0, "flag": 1, "delete": 2}.get(decision.verdict.action)
        if column is not None:
            row[column] += 1
        row[3] += 1
    return pending


shared_verdicts = [Verdict("pass", 0.0, "w", "local"), Verdict("flag", 1.0, "w", "local"),
                   Verdict("pass", 0.0, "w", "fallback"), Verdict("odd", None, "x", "local")]
batch_verdicts = st.sampled_from(shared_verdicts) | st.builds(
    Verdict, st.sampled_from(["pass", "flag", "delete", "x"]), st.none(),
    st.sampled_from(["w", "x"]), st.sampled_from(["local", "fallback"]))
# ts as the pipeline makes them (one float object for a run of decisions) or each its own.
stamps = st.sampled_from([1764129599.5, 1764129600.0, 1764129659.99, 1764130000.25])


@given(runs=st.lists(st.tuples(stamps, st.lists(batch_verdicts, max_size=6), st.booleans()),
                     max_size=5))
def test_stats_count_is_the_reference(runs: list[tuple[float, list[Verdict], bool]]) -> None:
    message = Message("m", "t", "s")
    decisions: list[Decision] = []
    for ts, run_verdicts, shared in runs:
        for verdict in run_verdicts:
            # Shared: the same float object; else an equal float of its own for each.
            decisions.append(Decision(message, verdict, "none", 0.5,
                                      ts if shared else float(str(ts))))
    stats = DecisionStats(None)
    half = len(decisions) // 2
    stats.count(decisions[:half])
    stats.count(decisions[half:])
    assert stats._pending == reference_count(decisions)


@given(verdict_list=st.lists(batch_verdicts, max_size=12),
       latency=st.sampled_from([0.05, 0.1, 3.0, 20000.0]))
def test_record_batch_is_record_for_each(verdict_list: list[Verdict], latency: float) -> None:
    batch, each = LatencyHistograms(), LatencyHistograms()
    batch.record_batch(verdict_list, latency)
    for verdict in verdict_list:
        each.record(verdict.engine, verdict.route, latency)
    assert [(e, r, h.counts, h.sum_ms) for e, r, h in batch.items()] == [
        (e, r, h.counts, h.sum_ms) for e, r, h in each.items()]


async def test_an_empty_word_list_passes_each_message_of_a_batch() -> None:
    engine = WordlistEngine("w", WordlistConfig())
    batch = [Message(str(i), text, "s") for i, text in enumerate(["", "idiot", "hi there"])]
    assert await engine.moderate_many(batch) == [engine.verdict_for(m.text) for m in batch]
    engine.reconfigure(WordlistConfig(delete=("idiot",)))
    verdicts = await engine.moderate_many(batch)
    assert [v.action for v in verdicts if isinstance(v, Verdict)] == ["pass", "delete", "pass"]


# --- the stages: a batch's decisions share one ts (formatted once by the sink) --------------

class BatchRecorder(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Decision]] = []

    async def write(self, decisions: Sequence[Decision]) -> None:
        self.batches.append(list(decisions))
        await super().write(decisions)


class AtOnceStreamer(StreamingEngine[None]):
    """Streams: answers every message of a list before submit_many returns."""

    def __init__(self) -> None:
        super().__init__("streamer", None)

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        on_result(Verdict("pass", 0.1, self.name, "ws"))

    async def submit_many(self, messages: Sequence[Message],
                          on_result: BatchResultCallback) -> None:
        for index in range(len(messages)):
            on_result(index, Verdict("flag" if index % 3 else "pass", 0.1, self.name, "ws"))

    async def moderate(self, message: Message) -> Verdict:
        raise AssertionError("a streaming primary is fed through submit")


@pytest.mark.parametrize("streaming", [False, True], ids=["batches", "streaming"])
async def test_the_decisions_handed_on_together_share_one_ts(streaming: bool) -> None:
    engine: Engine[Any] = AtOnceStreamer() if streaming else WordlistEngine(
        "wordlist", WordlistConfig(flag=("lol",)))
    batch = [Message(f"m-{i}", "lol" if i % 2 else "hi", "src") for i in range(40)]
    sink = BatchRecorder()
    pipeline = Pipeline([ListSource("src", batch)], [engine],
                        EngineChain([engine], "flag", timeout=5), Policy(PolicySection()),
                        [sink])
    assert pipeline.streaming is streaming
    with trio.fail_after(20):
        summary = await pipeline.run()
    assert summary.decided == 40
    assert sorted(d.message.id for d in sink.decisions) == sorted(m.id for m in batch)
    assert max(len(written) for written in sink.batches) > 1
    for written in sink.batches:
        assert len({id(decision.ts) for decision in written}) == 1


@given(stream=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"defgh", b"\r", b"\xff"]),
                       max_size=30).map(b"".join),
       max_line_bytes=st.integers(0, 6), cuts=st.lists(st.integers(0, 80), max_size=8))
def test_feed_lines_numbers_each_line_as_the_split_does(stream: bytes, max_line_bytes: int,
                                                        cuts: list[int]) -> None:
    pieces = stream.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    framer = LineFramer(max_line_bytes)
    runs: list[FramedLines] = []
    bounds = [0, *sorted(min(cut, len(stream)) for cut in cuts), len(stream)]
    for start, end in itertools.pairwise(bounds):
        runs.append(framer.feed_lines(stream[start:end]))
    runs.append(framer.end_lines())
    numbered: dict[int, bytes] = {}
    oversized: dict[int, int] = {}
    expected_first = 1
    for run in runs:
        assert run.first == expected_first  # runs follow one another
        expected_first += len(run.data)
        numbered.update(enumerate(run.data, run.first))
        oversized.update((item.number, item.size) for item in run.oversized)
    assert numbered == {number: b"" if len(piece) > max_line_bytes else piece
                        for number, piece in enumerate(pieces, start=1)}
    assert oversized == {number: len(piece) for number, piece in enumerate(pieces, start=1)
                         if len(piece) > max_line_bytes}
