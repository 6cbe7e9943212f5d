"""Alternations of regular expressions grouped by the character they can start with.

Python's regex engine tries every alternative of ``a|b|c`` at every position, entering each
one whose first item is a group or a repeat; the lexicon's lists are a few hundred
alternatives, so a line costs that many attempts per word. :func:`alternation` puts each
alternative behind a lookahead on the characters it can start with (read from the standard
library's own parse tree), so a position tries only the alternatives that can start there,
and finds the same match as the plain alternation.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# The standard library's regex parser (typeshed has no stubs for these private modules).
sre_parse: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")

# The engine skips an alternative that starts with a plain character at once; one that starts
# with a group or a repeat is entered. With fewer of those than this, the lookaheads cost more
# than they save (measured on the shipped lexicon) and the alternation stays plain.
MIN_ENTERED_ALTERNATIVES = 14
BACK_REFERENCE = re.compile(r"\\(?:[1-9]|g<)|\(\?P[<=]")


def alternation(alternatives: list[str], dispatch: bool = True) -> str:
    """``alternatives`` as one alternation that matches exactly what ``a|b|c`` matches (the
    same text, by the same alternative). With ``dispatch``, alternatives are grouped by the
    character they can start with, each group behind a lookahead on it: at a position, only
    the alternatives that can start there are tried (Python's engine otherwise enters every
    one whose first item is a group or a repeat, a few hundred per word). Plain ``a|b|c``
    when some alternative's first character cannot be known (it may match empty text)."""
    plain = "|".join(f"(?:{alternative})" for alternative in alternatives)
    if not dispatch:
        return plain
    # One source's own top-level branches are alternatives of their own.
    alternatives = [branch for a in alternatives for branch in top_level_branches(a)]
    firsts = [first_characters(alternative) for alternative in alternatives]
    if (sum(map(_entered, alternatives)) < MIN_ENTERED_ALTERNATIVES
            or any(first is None for first in firsts)
            # An alternative copied into several groups renumbers the groups after it.
            or any(BACK_REFERENCE.search(alternative) for alternative in alternatives)):
        return plain
    groups: dict[str, list[str]] = {}
    for alternative, first in zip(alternatives, firsts, strict=True):
        assert first is not None
        for char in sorted(first):
            groups.setdefault(char, []).append(alternative)
    # A character is one lookahead; only one succeeds at a position, and inside it the
    # alternatives keep their order, so the first one that matches is the same one.
    return "|".join(
        f"(?={re.escape(char)})(?:{'|'.join(f'(?:{a})' for a in group)})"
        for char, group in sorted(groups.items()))


def _entered(source: str) -> bool:
    """Whether the engine enters ``source`` to find it cannot start at a position (its first
    item is not one plain character or character class)."""
    items = list(sre_parse.parse(source))
    return not items or items[0][0] not in (sre.LITERAL, sre.IN)


def first_characters(source: str) -> frozenset[str] | None:
    """The characters a match of ``source`` can start with; None when unknown or when it can
    match empty text."""
    try:
        parsed = sre_parse.parse(source)
    except re.error:
        return None
    if parsed.state.flags & ~re.UNICODE:
        return None  # an inline flag (case-insensitive, verbose) changes what a letter matches
    return _first_of(list(parsed))


def _first_of(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    optional: set[str] = set()  # what optional items before this one can start with
    for op, value in items:
        if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            continue  # zero width: the first character comes from what follows
        if op is sre.LITERAL:
            return frozenset(optional | {chr(value)})
        if op is sre.IN:
            chars = _class_characters(value)
            return None if chars is None else frozenset(optional | chars)
        if op is sre.SUBPATTERN:
            _group, add_flags, del_flags, sub = value
            first = None if add_flags or del_flags else _first_of(list(sub))
            return None if first is None else frozenset(optional | first)
        if op is sre.BRANCH:
            found: set[str] = set()
            for sub in value[1]:
                first = _first_of(list(sub))
                if first is None:
                    return None
                found |= first
            return frozenset(optional | found)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            least, _most, sub = value
            first = _first_of(list(sub))
            if first is None or least >= 1:
                return None if first is None else frozenset(optional | first)
            optional |= first  # "(new )?hoe": "n" or what follows
            continue
        return None
    return None  # it can match empty text


MAX_CLASS_CHARACTERS = 256


def _class_characters(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    found: set[str] = set()
    for op, value in items:
        if op is sre.LITERAL:
            found.add(chr(value))
        elif op is sre.RANGE and value[1] - value[0] < MAX_CLASS_CHARACTERS:
            found.update(chr(code) for code in range(value[0], value[1] + 1))
        else:  # a negated class, \w, \s or a wide range: anything
            return None
    return frozenset(found)


def top_level_branches(source: str) -> list[str]:
    """``source`` split at its ``|`` outside groups and character classes."""
    branches: list[str] = []
    depth, start, index, in_class = 0, 0, 0, False
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            branches.append(source[start:index])
            start = index + 1
        index += 1
    branches.append(source[start:])
    return branches
