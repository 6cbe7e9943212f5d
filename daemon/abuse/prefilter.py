"""A cheap test that a lexicon regex cannot match a line, so that the regex is not run.

Every match of a lexicon pattern contains one of a few literal strings, read from the
pattern's parse tree when the lexicon loads (``\\b(kill|stab) (you|u)\\b`` contains "kill"
or "stab"); a listed word's letters appear in order, each perhaps repeated, perhaps split by
spaces ("fuuuck", "nig ger"). Both survive :func:`collapsed` (whitespace removed, each run of
one character written once) of the matched text and of the whole line alike, and so does a
slice of three characters (or two) of that form: each string is keyed by its rarest slice,
and a line by the slices of its collapsed form. A regex none of whose keys the line has
cannot match it and is skipped; when a few of a list's alternatives can match, those are
searched one by one and the leftmost match wins (ties to the earlier alternative): what the
one regex of the whole list finds, at a fraction of the cost. Squeezing a line's repeated
letters (:func:`chatmod.textnorm.squeeze_repeats`) leaves its collapsed form as it was, so
the canonical line's keys serve the deobfuscated one. The test only ever says "cannot
match": never a verdict.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

sre_parse: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")

KEY_LENGTH = 3
SHORTEST_KEY = 2  # a one-character key would be in almost every line: no test at all
# With more alternatives possible than this, the whole list's one regex is cheaper to run.
MOST_SEPARATE_SEARCHES = 8
# A "*" in a line may stand for a letter of a listed word ("f*ck"): word lists then run whole.
MASK = "*"
# How likely a slice is to be in a line by chance, from English letter frequencies (per
# 10,000 letters) and the slices of the commonest chat words: a string's key is its rarest
# slice, and a list's alternatives are keyed by the strings least likely to be there.
_LETTERS = dict(zip("etaoinshrdlcumwfgypbvkjxqz", (
    1270, 910, 820, 750, 700, 670, 630, 610, 600, 430, 400, 280, 280, 240, 240, 220, 200,
    200, 190, 150, 100, 80, 15, 15, 10, 7), strict=True))
_OTHER_CHARACTER = 100
_LETTER_TOTAL = 10_000
_COMMON_SLICES = frozenset((
    "you", "yo", "ou", "the", "th", "he", "ing", "in", "ng", "and", "an", "nd", "is", "it",
    "to", "at", "on", "ur", "are", "re", "for", "or", "er", "es", "en", "te", "se", "ti", "go",
    "no", "so", "do", "be", "of", "my", "me", "we", "as", "up", "us", "if", "hat", "tha", "thi",
    "his", "was", "wa", "ha", "hi", "ll", "ol", "lo", "gg", "lol", "ga", "am", "ame", "gam",
))
_COMMON_SLICE_PENALTY = 1000
# A character the same character follows: deleting each leaves every run written once.
_DOUBLED = re.compile(r"(.)(?=\1)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class LineKeys:
    """The keys a line has among those a lexicon uses, and whether it has a :data:`MASK`."""

    keys: frozenset[str]
    masked: bool


def collapsed(text: str) -> str:
    """``text`` without whitespace, each run of one character written once."""
    return _DOUBLED.sub("", "".join(text.split()))


@dataclass(frozen=True, slots=True)
class KnownKeys:
    """The keys a lexicon's regexes use, by length (a line is looked up for those only)."""

    triples: frozenset[str]
    pairs: tuple[str, ...]

    @classmethod
    def of(cls, keys: Iterable[str]) -> KnownKeys:
        """Sorted by length."""
        keys = frozenset(keys)
        return cls(frozenset(k for k in keys if len(k) == KEY_LENGTH),
                   tuple(sorted(k for k in keys if len(k) < KEY_LENGTH)))


def line_keys(text: str, known: KnownKeys) -> LineKeys:
    """The keys among ``known`` that ``text`` has: slices of its :func:`collapsed` form."""
    short = collapsed(text)
    triples = known.triples.intersection(
        map("".join, zip(short, short[1:], short[2:], strict=False)))
    if known.pairs:
        triples = triples.union(pair for pair in known.pairs if pair in short)
    return LineKeys(triples, MASK in text)


def key_of(literal: str) -> str | None:
    """The rarest slice of ``literal``'s :func:`collapsed` form, :data:`KEY_LENGTH` long or
    else :data:`SHORTEST_KEY`; None when that form is shorter."""
    short = collapsed(literal)
    if len(short) < SHORTEST_KEY:
        return None
    size = min(KEY_LENGTH, len(short))
    return min((short[i:i + size] for i in range(len(short) - size + 1)), key=_commonness)


def _commonness(key: str) -> float:
    chance = _COMMON_SLICE_PENALTY if key in _COMMON_SLICES else 1.0
    for char in key:
        chance *= _LETTERS.get(char, _OTHER_CHARACTER) / _LETTER_TOTAL
    return chance


def necessary_literals(source: str) -> frozenset[str] | None:
    """Strings one of which every match of ``source`` contains (the set whose keys are the
    least common); None when no such set is known."""
    try:
        parsed = sre_parse.parse(source)
    except re.error:
        return None
    if parsed.state.flags & ~re.UNICODE:
        return None  # an inline flag (case-insensitive, verbose) changes what a letter matches
    return _necessary(list(parsed))


def _necessary(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    """The best of the sets each item of a sequence requires (a match contains them all)."""
    candidates: list[frozenset[str]] = []
    run = ""
    for op, value in items:
        if op is sre.LITERAL:
            run += chr(value)
            continue
        if run:
            candidates.append(frozenset((run,)))
            run = ""
        required = _required_by(op, value)
        if required is not None:
            candidates.append(required)
    if run:
        candidates.append(frozenset((run,)))
    usable = [c for c in candidates if all(key_of(literal) is not None for literal in c)]
    return min(usable, key=_cost, default=None)


def _required_by(op: Any, value: Any) -> frozenset[str] | None:
    """What one item that is not a plain character requires of a match."""
    if op is sre.SUBPATTERN:
        _group, add_flags, del_flags, sub = value
        return None if add_flags or del_flags else _necessary(list(sub))
    if op is sre.ATOMIC_GROUP:
        return _necessary(list(value))
    if op is sre.BRANCH:
        found: set[str] = set()
        for sub in value[1]:
            branch = _necessary(list(sub))
            if branch is None:
                return None
            found |= branch
        return frozenset(found)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        least, _most, sub = value
        return _necessary(list(sub)) if least >= 1 else None
    return None  # a class, a lookaround, an anchor, a back reference: nothing to require


def _cost(literals: frozenset[str]) -> float:
    """How likely a line is to have one of the keys by chance (lower is better)."""
    return sum(_commonness(key) for literal in literals if (key := key_of(literal)))


@dataclass(frozen=True, slots=True)
class Alternative:
    """One alternative of a list, compiled on its own, and the keys one of which a line has
    when it can match (None: it may match any line)."""

    regex: re.Pattern[str]
    keys: frozenset[str] | None

    @classmethod
    def pattern(cls, source: str) -> Alternative:
        """A pattern of the lexicon."""
        return cls(re.compile(source), _keys(necessary_literals(source)))

    @classmethod
    def word(cls, source: str, word: str) -> Alternative:
        """A listed word and its regex (the word's letters, each maybe repeated or masked)."""
        key = key_of(word)
        return cls(re.compile(source), None if key is None else frozenset((key,)))


def _keys(literals: Iterable[str] | None) -> frozenset[str] | None:
    if literals is None:
        return None
    keys = [key_of(literal) for literal in literals]
    return None if None in keys else frozenset(k for k in keys if k is not None)


class GatedRegex:
    """A list's one compiled regex (``a|b|c``) and its alternatives compiled one by one in
    the same order; searches find what the one regex finds."""

    def __init__(self, combined: re.Pattern[str], alternatives: Sequence[Alternative], *,
                 masks: bool) -> None:
        """``masks``: a :data:`MASK` in a line may stand for a letter (a word list)."""
        self.combined = combined
        self.pattern = combined.pattern
        self.alternatives = tuple(alternatives)
        self._masks = masks
        self._regexes = tuple(alternative.regex for alternative in self.alternatives)
        self._always = tuple(i for i, a in enumerate(self.alternatives) if a.keys is None)
        by_key: dict[str, list[int]] = {}
        for index, alternative in enumerate(self.alternatives):
            for key in alternative.keys or ():
                by_key.setdefault(key, []).append(index)
        self._by_key = {key: tuple(indices) for key, indices in by_key.items()}
        self.keys = frozenset(by_key)

    def possible(self, line: LineKeys | None) -> Sequence[int] | None:
        """The alternatives that may match a line with these keys (None: unknown), in order;
        None: any."""
        if line is None or (self._masks and line.masked):
            return None
        hits = line.keys.intersection(self.keys)
        if not hits:
            return self._always
        if len(hits) == 1 and not self._always:
            return self._by_key[next(iter(hits))]
        found = set(self._always)
        for key in hits:
            found.update(self._by_key[key])
        return sorted(found)

    def search(self, text: str, line: LineKeys | None) -> re.Match[str] | None:
        """``combined.search(text)``; ``line`` must be the keys of ``text`` or of the same
        text with its repeats squeezed (or None)."""
        # The commonest case first, inline: the line has none of the keys.
        if (line is not None and not self._always and line.keys.isdisjoint(self.keys)
                and not (self._masks and line.masked)):
            return None
        possible = self.possible(line)
        if possible is None or len(possible) > MOST_SEPARATE_SEARCHES:
            return self.combined.search(text)
        regexes = self._regexes
        if len(possible) == 1:
            return regexes[possible[0]].search(text)
        best: re.Match[str] | None = None
        for index in possible:  # in order: on a tie the earlier alternative stays
            found = regexes[index].search(text)
            if found is not None and (best is None or found.start() < best.start()):
                best = found
        return best

    def sub(self, replacement: str | Callable[[re.Match[str]], str], text: str,
            line: LineKeys | None) -> str:
        """``combined.sub(replacement, text)``; ``line`` as for :meth:`search`."""
        possible = self.possible(line)
        if possible is not None and not possible:
            return text
        return self.combined.sub(replacement, text)
