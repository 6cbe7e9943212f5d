"""The lexicon's pre-filter (chatmod.abuse.prefilter) changes no assessment: the lexicon with
it and the lexicon running every regex give the same category, score, matched text and model
text for every labelled line and for generated lines, obfuscated the ways chat obfuscates
(leetspeak, spacing, repeated letters, look-alike letters, mixed scripts, invisible and
combining characters, masks). Mutants of the pre-filter are caught by the same comparison.
Property tests follow HYPOTHESIS_PROFILE (thorough: 10,000)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from importlib import resources

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod import textnorm
from chatmod.abuse import copypasta, prefilter
from chatmod.abuse.detect import LEXICON_FILE, Lexicon
from chatmod.abuse.prefilter import Alternative, GatedRegex, KnownKeys, line_keys
from chatmod.plugins.local import score_batch

from .helpers import REPO

LABELLED = REPO / "bench" / "eval" / "chat-labelled.jsonl"
TABLE = tomllib.loads(
    resources.files("chatmod.abuse").joinpath(LEXICON_FILE).read_text(encoding="utf-8"))
FILTERED = Lexicon(TABLE)
UNFILTERED = Lexicon(TABLE, prefilter=False)
LINES = [orjson.loads(line)["text"] for line in LABELLED.read_bytes().splitlines()]
# Lines each of which a mutant below gets wrong (the labelled set has the rest).
OBFUSCATED = ["fuuck you", "you noooobb", "f*ck you", "you are a muppet", "go die", "you stupid kiiid",
              "nig ger", "ur a n00b", "\u0455\u0445 you idiot"]


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
                        found.update(re.findall(r"[a-z]+(?: [a-z]+)?", item))
    return sorted(found)


VOCABULARY = sorted({*_lexicon_words(), *(w for line in LINES for w in line.split())})
LEET = str.maketrans("aeiostgb", "43105798")
SYMBOLS = str.maketrans("aisl", "@$!|")
# Cyrillic and Greek letters drawn like Latin ones (a mixed-script word).
LOOK_ALIKES = str.maketrans("aeopcxiyk", "\u0430\u0435\u043e\u0440\u0441\u0445\u0456\u0443\u03ba")
OBFUSCATIONS: dict[str, Callable[[str], str]] = {
    "plain": lambda word: word,
    "upper": str.upper,
    "leet": lambda word: word.translate(LEET),
    "symbols": lambda word: word.translate(SYMBOLS),
    "spaced": " ".join,
    "dotted": ".".join,
    "split": lambda word: f"{word[:3]} {word[3:]}",
    "repeated": lambda word: "".join(c * (1 + i % 4) for i, c in enumerate(word)),
    "doubled": lambda word: "".join(c * 2 for c in word),
    "look-alikes": lambda word: word.translate(LOOK_ALIKES),
    "half look-alikes": lambda word: word[: len(word) // 2] + word[len(word) // 2:].translate(
        LOOK_ALIKES),
    "zero-width": "\u200b".join,
    "combining": lambda word: "".join(c + "\u0336" for c in word),
    "fullwidth": lambda word: "".join(
        chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in word),
    "masked": lambda word: word[:1] + "*" + word[2:],
    "apostrophe": lambda word: word[:2] + "'" + word[2:],
}
WORDS = st.tuples(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6)),
                  st.sampled_from(sorted(OBFUSCATIONS))).map(
    lambda pair: OBFUSCATIONS[pair[1]](pair[0]))
SEPARATORS = st.sampled_from([" ", " ", " ", "  ", ", ", ". ", "! ", "? ", "\n", " @", "-"])
OBFUSCATED_LINES = st.lists(st.tuples(WORDS, SEPARATORS), max_size=14).map(
    lambda parts: "".join(word + gap for word, gap in parts))


def test_every_labelled_line_is_assessed_the_same() -> None:
    assert len(LINES) > 1000
    differing = [line for line in LINES if FILTERED.assess(line) != UNFILTERED.assess(line)]
    assert differing == []
    # ...and the set exercises the lexicon: most categories match some line.
    assert len({FILTERED.assess(line).category for line in LINES} - {None}) >= 8


def test_the_prefilter_skips_most_lists_on_a_clean_line() -> None:
    """The comparisons mean something only if the pre-filter does skip regexes."""
    keys = FILTERED._keys("what a great stream tonight, see you all tomorrow")
    lists = [c.patterns for c in FILTERED.categories if c.patterns is not None]
    skipped = [g for g in lists if g.possible(keys) == ()]
    assert len(skipped) >= len(lists) // 2


@given(OBFUSCATED_LINES)
@example("fuuuuck you")
@example("f u c k  y o u")
@example("\uff46\uff55\uff43\uff4b you")
@example("n\u200bi\u200bg\u200bg\u200be\u200br")
@example("k i l l  y o u r s e l f")
@example("sh1t, you're a m0r0n")
@example("\u0430sshole")
@example("g i f t . x y z")
def test_obfuscated_lines_are_assessed_the_same(text: str) -> None:
    assert FILTERED.assess(text) == UNFILTERED.assess(text)


@given(st.text())
def test_any_text_is_assessed_the_same(text: str) -> None:
    assert FILTERED.assess(text) == UNFILTERED.assess(text)


@given(st.lists(st.sampled_from(["abc", "b+c", "(ab|bd)c", "c(a|b)+", "a b", r"\bbc", "ca?b",
                                 "dd", "bca", "(?:c|d)b"]), min_size=1, max_size=6),
       st.text(alphabet="abcd ", max_size=30))
def test_a_gated_list_finds_what_its_one_regex_finds(sources: list[str], text: str) -> None:
    combined = re.compile("|".join(f"(?:{s})" for s in sources))
    gated = GatedRegex(combined, [Alternative.pattern(f"(?:{s})") for s in sources],
                       masks=False)
    keys = line_keys(text, KnownKeys.of(gated.keys))
    found, expected = gated.search(text, keys), combined.search(text)
    assert (found and (found.span(), found.group(0))) == (
        expected and (expected.span(), expected.group(0)))
    assert gated.sub("-", text, keys) == combined.sub("-", text)


@pytest.mark.parametrize(
    ("source", "literals"),
    [
        ("abc", {"abc"}),
        (r"\bkill (you|u)\b", {"kill "}),
        (r"\b(kill|stab) (you|u)\b", {"kill", "stab"}),
        (r"(go|pls|please) die\b", {" die"}),
        ("fu+ck", {"ck"}),
        ("a*", None),  # may match empty text: nothing is required
        (r"\w+", None),
        ("(?i)kill", None),  # case-insensitive: "KILL" too
        ("(a|b*)cd", {"cd"}),
    ],
)
def test_necessary_literals(source: str, literals: set[str] | None) -> None:
    assert prefilter.necessary_literals(source) == (
        None if literals is None else frozenset(literals))


def test_keys_survive_repeats_and_spacing() -> None:
    key = prefilter.key_of("fuck")
    assert key is not None
    known = KnownKeys.of([key])
    for text in ("fuuuck", "f u c k", "ffuucckk", "fuck"):
        assert key in line_keys(text, known).keys
    assert key not in line_keys("fork", known).keys


def _labelled_or_obfuscated_differ(lexicon: Lexicon) -> list[str]:
    return [line for line in [*LINES, *OBFUSCATED]
            if lexicon.assess(line) != UNFILTERED.assess(line)]


def _uncollapsed(text: str) -> str:
    return "".join(text.split())


def _first_branch_only(op: object, value: object) -> frozenset[str] | None:
    if op is prefilter.sre.BRANCH:
        return prefilter._necessary(list(value[1][0]))  # type: ignore[index]
    return ORIGINAL_REQUIRED_BY(op, value)


def _first_slice(literal: str) -> str | None:
    short = prefilter.collapsed(literal)
    return short[:3] if len(short) >= 2 else None


ORIGINAL_REQUIRED_BY = prefilter._required_by


@pytest.mark.parametrize(
    ("name", "mutant"),
    [
        # Repeats not collapsed: "fuuck" has no "fuc".
        ("collapsed", _uncollapsed),
        # A branch requires its first alternative's strings only.
        ("_required_by", _first_branch_only),
        # A literal's key is any slice of the word, not one of the literal's.
        ("key_of", lambda literal: _first_slice(literal[::-1])),
    ],
)
def test_a_mutant_prefilter_is_caught(monkeypatch: pytest.MonkeyPatch, name: str,
                                      mutant: Callable[..., object]) -> None:
    monkeypatch.setattr(prefilter, name, mutant)
    assert _labelled_or_obfuscated_differ(Lexicon(TABLE)) != []


def _deobfuscated_token_by_token(text: str) -> str:
    """textnorm.deobfuscate without its fast path for words of letters only."""
    groups = []
    for group in re.split(r"\s{2,}", text):
        tokens = textnorm._join_spaced_letters(
            [token for token in textnorm.fold(group).split(" ") if token])
        groups.append(" ".join(textnorm._unleet(token) for token in tokens))
    return " ".join(g for g in groups if g)


@given(st.one_of(OBFUSCATED_LINES, st.text()))
@example("f u c k  y o u")
@example("a b c")
@example("hello  world")
@example("a\x0b\x0cb")
def test_folding_once_folds_and_deobfuscates_as_before(text: str) -> None:
    assert textnorm.fold_and_deobfuscate(text) == (
        textnorm.fold(text), _deobfuscated_token_by_token(text))


def _repeated_phrase_scanned(words: list[str]) -> str | None:
    """copypasta.repeated_phrase without its early exit (no pair of words said twice)."""
    words = [word.strip(".,!?;:") for word in words[:copypasta.MAX_PHRASE_SCAN_WORDS]]
    for size in range(copypasta.REPEATED_PHRASE_WORDS - 1, copypasta.LONGEST_REPEATED_PHRASE + 1):
        needed = (copypasta.REPEATED_PHRASE_TIMES if size >= copypasta.REPEATED_PHRASE_WORDS
                  else copypasta.REPEATED_PAIR_TIMES)
        last_start: dict[tuple[str, ...], int] = {}
        times: dict[tuple[str, ...], int] = {}
        for start in range(len(words) - size + 1):
            gram = tuple(words[start:start + size])
            if start - last_start.get(gram, -size) < size:
                continue
            last_start[gram] = start
            times[gram] = times.get(gram, 0) + 1
            phrase = " ".join(gram)
            if (times[gram] >= needed and len(phrase) >= copypasta.REPEATED_PHRASE_CHARS
                    and len(set(gram)) > 1):
                return phrase
    return None


@given(st.lists(st.sampled_from(["mods", "ban", "me", "me!", "please", "now", "lol", "gg"]),
                max_size=24))
@example(["mods", "ban", "me", "please", "mods", "ban", "me", "please"])
@example(["ban", "me", "ban", "me", "ban", "me", "now"])
def test_the_copypasta_scan_stops_early_only_when_nothing_repeats(words: list[str]) -> None:
    assert copypasta.repeated_phrase(words) == _repeated_phrase_scanned(words)


def test_a_raid_batch_asks_the_model_once_per_distinct_text() -> None:
    asked: list[list[str]] = []

    def predictor(texts: Sequence[str]) -> Sequence[float]:
        asked.append(list(texts))
        return [0.8 if "fuck" in t else 0.1 for t in texts]

    raid = ["fuck you", "FUCK YOU", "f u c k  y o u", "fuuuck you", "hello", "sick play!"]
    together = score_batch(raid, predictor, FILTERED, normalise=True)
    # The variants leave one text for the model; "sick play!" leaves nothing to score.
    assert asked == [["fuck you", "hello"]]
    alone = [score_batch([text], predictor, FILTERED, normalise=True)[0] for text in raid]
    assert together == alone
