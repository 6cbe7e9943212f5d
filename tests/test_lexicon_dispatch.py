"""The lexicon's alternations grouped by first character (the fast path) find exactly what
the plain alternations find: the same category, score, matched text and model text for every
labelled line and for generated lines built from their words and the lexicon's own.
Property tests follow HYPOTHESIS_PROFILE (thorough: 10,000)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from importlib import resources

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.abuse.alternation import alternation, first_characters
from chatmod.abuse.detect import LEXICON_FILE, Assessment, Lexicon
from chatmod.plugins.local import score_batch

from .helpers import REPO

LABELLED = REPO / "bench" / "eval" / "chat-labelled.jsonl"
TABLE = tomllib.loads(
    resources.files("chatmod.abuse").joinpath(LEXICON_FILE).read_text(encoding="utf-8"))
FAST = Lexicon(TABLE)
PLAIN = Lexicon(TABLE, dispatch=False)
LINES = [orjson.loads(line)["text"] for line in LABELLED.read_bytes().splitlines()]


def _lexicon_words() -> list[str]:
    """Every listed word and the literal words of every pattern: text the lexicon reacts to."""
    found: set[str] = set()
    for section in TABLE.values():
        if not isinstance(section, dict):
            continue
        for value in section.values():
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, str):
                        found.update(re.findall(r"[a-z]+", item))
    return sorted(found)


VOCABULARY = sorted({*_lexicon_words(), *(w for line in LINES for w in line.split())})
SEPARATORS = st.sampled_from([" ", " ", " ", "  ", ", ", ". ", "! ", "? ", "\n", " @", "-"])
LINES_OF_WORDS = st.lists(
    st.tuples(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6)), SEPARATORS),
    max_size=14,
).map(lambda parts: "".join(word + gap for word, gap in parts))


def test_the_fast_path_is_used() -> None:
    """The comparison below means something only if the two lexicons differ in form."""
    fast = [c.patterns.pattern for c in FAST.categories if c.patterns is not None]
    plain = [c.patterns.pattern for c in PLAIN.categories if c.patterns is not None]
    assert sum("(?=" in p for p in fast) > sum("(?=" in p for p in plain)


def test_every_labelled_line_is_assessed_the_same() -> None:
    assert len(LINES) > 1000
    differing = [line for line in LINES if FAST.assess(line) != PLAIN.assess(line)]
    assert differing == []
    # ...and the set exercises the lexicon: most categories match some line.
    categories = {FAST.assess(line).category for line in LINES}
    assert len(categories - {None}) >= 8


@given(LINES_OF_WORDS)
@example("kill you")
@example("new hoe for the garden")
@example("touch grass")
@example("va crever")
def test_generated_lines_are_assessed_the_same(text: str) -> None:
    assert FAST.assess(text) == PLAIN.assess(text)


@given(st.text())
def test_any_text_is_assessed_the_same(text: str) -> None:
    assert FAST.assess(text) == PLAIN.assess(text)


@pytest.mark.parametrize(
    ("source", "first"),
    [
        ("abc", {"a"}),
        ("(new )?hoe", {"n", "h"}),
        ("(va |vas )?crever", {"v", "c"}),
        ("[x-z]+y", {"x", "y", "z"}),
        (r"(?=a)b", {"b"}),
        ("a*", None),  # may match empty text
        (r"\w+", None),  # any word character: not enumerated
        ("[^a]b", None),
        ("(?i)abc", None),  # case-insensitive: "A" too
        ("(a|b*)c", None),  # a branch that may be empty
    ],
)
def test_first_characters(source: str, first: set[str] | None) -> None:
    assert first_characters(source) == (None if first is None else frozenset(first))


# Each starts with a group or a repeat: an alternation of 14 or more of them is grouped.
@given(st.lists(st.sampled_from(["(abc)", "(ab)", "b+(c|d)", "(x )?ay", "(bd)", "a+[bc]d", "c+a"]),
                min_size=30, max_size=40),
       st.text(alphabet="abcdxy ", max_size=30))
def test_alternation_matches_like_the_plain_one(alternatives: list[str], text: str) -> None:
    plain = re.compile("|".join(f"(?:{a})" for a in alternatives))
    grouped = re.compile(alternation(alternatives))
    assert grouped.pattern != plain.pattern
    assert [m.span() for m in grouped.finditer(text)] == [m.span() for m in plain.finditer(text)]


class CountingLexicon(Lexicon):
    """The shipped lexicon, counting what it assesses."""

    def __init__(self) -> None:
        super().__init__(TABLE)
        self.assessed: list[str] = []

    def assess(self, text: str) -> Assessment:
        self.assessed.append(text)
        return super().assess(text)


def test_a_batch_assesses_each_distinct_text_once() -> None:
    def predictor(texts: Sequence[str]) -> Sequence[float]:
        return [0.5 if "fuck" in t else 0.1 for t in texts]

    raid = ["you are trash", "fuck this", "you are trash", "hello", "you are trash"]
    counting = CountingLexicon()
    together = score_batch(raid, predictor, counting, normalise=True)
    assert sorted(counting.assessed) == sorted(set(raid))
    alone = [score_batch([text], predictor, FAST, normalise=True)[0] for text in raid]
    assert together == alone
    assert together[0] == together[2] == together[4] != together[3]


def test_an_alternation_with_a_back_reference_stays_plain() -> None:
    alternatives = [f"({char}+)x\\1" for char in "abcdefghijklmnop"]
    assert alternation(alternatives) == "|".join(f"(?:{a})" for a in alternatives)
    assert alternation([f"({char}+)x" for char in "abcdefghijklmnop"]).startswith("(?=")
