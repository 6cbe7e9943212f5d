"""Differential tests of the pipeline's cheaper object creation (issue 14, round 3): the
frozen dataclasses' ``__init__`` (:func:`chatmod.core.model.quick_init`) must build exactly
what the dataclass's own ``__init__`` built, frozen as before.

The 10,000-example run: ``HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest
tests/test_object_fast_paths.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmod.core.model import Decision, Message, Verdict, quick_init
from chatmod.protocols.lines import Line, OversizedLine


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
