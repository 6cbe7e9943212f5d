"""The wordlist engine's fast path (issue 14): only the non-empty lists are searched and passing
messages share one verdict. The old verdict_for (63b095e) is kept here as the reference."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.core.model import DELETE, FLAG, PASS, Message, Verdict
from chatmod.plugins.wordlist import ROUTE_LOCAL, WordlistConfig, WordlistEngine, compile_words


def reference_verdict(config: WordlistConfig, name: str, text: str) -> Verdict:
    delete, flag = compile_words(config.delete), compile_words(config.flag)
    for action, pattern in ((DELETE, delete), (FLAG, flag)):
        if pattern is not None and (match := pattern.search(text)) is not None:
            return Verdict(action, 1.0, name, ROUTE_LOCAL, {"matched": match.group(0).lower()})
    return Verdict(PASS, 0.0, name, ROUTE_LOCAL)


words = st.lists(st.sampled_from(["bad", "Worse", "x", "a b", "é", "bad word"]), max_size=3)
texts = st.lists(st.sampled_from(["bad", "worse", "BAD", "x", "a b", "é", "ok", " ", "-",
                                  "badword", "bad word"]), max_size=6).map("".join)


@given(delete=words, flag=words, text_list=st.lists(texts, min_size=1, max_size=4),
       later=st.none() | st.tuples(words, words))
@example(delete=[], flag=[], text_list=["bad"], later=(["bad"], []))
@example(delete=["bad"], flag=["bad"], text_list=["bad"], later=None)
def test_verdicts_are_the_reference(delete: list[str], flag: list[str], text_list: list[str],
                                    later: tuple[list[str], list[str]] | None) -> None:
    config = WordlistConfig(delete=tuple(delete), flag=tuple(flag))
    engine = WordlistEngine("words", config)
    for text in text_list:
        assert engine.verdict_for(text) == reference_verdict(config, "words", text)
    if later is not None:  # reconfigured: the new lists apply from the next message
        config = WordlistConfig(delete=tuple(later[0]), flag=tuple(later[1]))
        assert engine.reconfigure(config)
        for text in text_list:
            assert engine.verdict_for(text) == reference_verdict(config, "words", text)


async def test_passing_messages_share_one_frozen_verdict() -> None:
    engine = WordlistEngine("words", WordlistConfig(flag=("bad",)))
    first, second = engine.verdict_for("fine"), engine.verdict_for("also fine")
    assert first is second
    assert (first.action, first.score, first.scores) == (PASS, 0.0, {})
    answers = await engine.moderate_many([Message("1", "so bad", "s"), Message("2", "ok", "s")])
    assert answers == [Verdict(FLAG, 1.0, "words", ROUTE_LOCAL, {"matched": "bad"}), first]
