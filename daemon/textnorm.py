"""Text normalisation: what an obfuscated chat line says, in plain lower-case Latin letters.

Raids and evasions write the same word many ways: ``FUCK``, ``fuuuuck``, ``f u c k``,
``f.u.c.k``, leetspeak (``sh1t``, ``a$$``), Cyrillic or Greek look-alikes (a Cyrillic ``a``
inside a Latin word), zero-width characters inside a word, combining marks (strike-through,
Zalgo) and styled Unicode letters (mathematical bold, fullwidth). :func:`fold` undoes what
keeps a string's meaning (case, Unicode styling, marks, invisible characters, look-alikes);
:func:`canonical` also undoes leetspeak, letter spacing and letter repeats, and is what the
verdict cache keys on and what the embedded engine scores. Both are pure and never raise.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Cyrillic and Greek letters drawn like Latin ones, and Latin variants (dotless i, script
# g and l); lower case only, as folding comes first.
HOMOGLYPHS = str.maketrans(
    (
        "\u0430\u0432\u0435\u0451\u043a\u043c\u043d\u043e\u0440\u0441"
        "\u0442\u0443\u0445\u0456\u0457\u0458\u0455\u0501\u051b\u051d"
        "\u0261\u0131\u2113\u03b1\u03b2\u03b5\u03b7\u03b9\u03ba\u03bd"
        "\u03bf\u03c1\u03c4\u03c5\u03c7\u03c9\u03c2\u04bb\u04cf\u0475\u0491"
    ),
    "abeekmhopctyxiijsdqwgilabenikvoptuxwshlvr",
)
# Digits and symbols standing for letters, applied only inside a word that has a letter
# (``sh1t``, ``a$$``), so that numbers and punctuation around words keep their meaning.
LEET = str.maketrans({
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s", "!": "i", "|": "i", "€": "e", "+": "t",
})
_LEET_CHARS = frozenset(chr(code) for code in LEET)
# Digits that are numbers even inside a word: match-ups ("1v1", "5v5"), ordinals and units
# ("1st", "4k", "60fps", "144hz"), and a name or rank with a number of two or more different
# digits after it ("top10", "ak47", "win10"). A run of one digit repeated stays leetspeak
# ("a55" is "ass").
NUMBER_SHAPE = re.compile(
    r"[a-z]*\d+v\d+[a-z]*"
    r"|\d+(?:st|nd|rd|th|k|m|p|x|s|d|hz|fps|ms|gb|tb|mb|h|min|am|pm|yo)"
    r"|[^\W\d_]+(?!(\d)\1+$)\d{2,}"
)
# Punctuation around a word is not part of it: ``hello!`` keeps its ``!``.
_EDGE = re.compile(r"^([\"'(\[{<.,;:!?¿¡…]*)(.*?)([\"')\]}>.,;:!?…]*)$", re.DOTALL)
_HAS_LETTER = re.compile(r"[^\W\d_]")
# A letter spelt out with punctuation after it ends a spaced run: "k u r w a, lag".
_SPELT_LAST = re.compile(r"^([^\W\d_])([.,;:!?…]+)$")
# Separators between spaced letters join them too: "d i s c o r d - g i f t . c o m".
_SPACED_SEPARATORS = frozenset("-._")
# Letters joined by separators: ``f.u.c.k``, ``k-y-s``, ``f_u_c_k`` (three or more letters).
_SEPARATED_LETTERS = re.compile(r"^(?:[^\W\d_][.\-_*·]){2,}[^\W\d_]$")
_SEPARATORS = re.compile(r"[.\-_*·]")
# No word has a letter three times in a row; ``fuuuuck`` and ``loool`` mean one.
_REPEATS = re.compile(r"([^\W\d_])\1{2,}")
_WIDE_SPACE = re.compile(r"\s{2,}")
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)", re.IGNORECASE)
# ASCII control characters (other than tab and newline, which are spacing) are dropped.
_ASCII_CONTROLS = dict.fromkeys([*range(0x09), *range(0x0B, 0x20), 0x7F])
# Join runs of at least this many single letters (``f u c k``, not ``a b``)...
MIN_SPACED_LETTERS = 3
# ...unless every letter is chat shorthand on its own: ``u r a noob``, ``i c u``.
SHORTHAND_LETTERS = frozenset("uriacny")


def fold(text: str) -> str:
    """Lower case, Unicode compatibility forms (fullwidth, styled letters), no combining marks,
    no invisible format characters (zero-width space and joiners, soft hyphen, BOM), Cyrillic
    and Greek look-alikes as Latin letters, whitespace runs as one space."""
    if text.isascii():  # most chat: no marks, look-alikes or invisible characters to undo
        return " ".join(text.translate(_ASCII_CONTROLS).lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(
        char for char in decomposed
        if unicodedata.category(char) not in ("Mn", "Me", "Cf", "Cc") or char in "\t\n"
    )
    return " ".join(kept.casefold().translate(HOMOGLYPHS).split())


def _unleet(token: str) -> str:
    if token.isalpha():  # the common case: a plain word
        return token
    if _URL.match(token):
        return token
    match = _EDGE.match(token)
    if match is None:  # pragma: no cover - the pattern matches every string
        return token
    before, core, after = match.groups()
    if not core or not _HAS_LETTER.search(core) or NUMBER_SHAPE.fullmatch(core):
        return token
    if _SEPARATED_LETTERS.match(core):
        core = _SEPARATORS.sub("", core)
    return before + core.translate(LEET) + after


def _spelt(token: str) -> bool:
    return len(token) == 1 and (_HAS_LETTER.match(token) is not None or token in _LEET_CHARS)


def _join_spaced_letters(tokens: list[str]) -> list[str]:
    joined: list[str] = []
    run: list[str] = []

    def close_run(last: str = "", after: str = "") -> None:
        # Separators trailing the run are not part of it.
        tail: list[str] = []
        while run and run[-1] in _SPACED_SEPARATORS:
            tail.insert(0, run.pop())
        letters = [t for t in run if _HAS_LETTER.match(t)]
        spelt = [t for t in run if t not in _SPACED_SEPARATORS]
        if (len(spelt) + bool(last) >= MIN_SPACED_LETTERS and (letters or last)
                and not SHORTHAND_LETTERS.issuperset([*spelt, last] if last else spelt)):
            joined.append("".join(run) + last + after)
        else:
            joined.extend(run)
            if last:
                joined.append(last + after)
        joined.extend(tail)
        run.clear()

    for token in tokens:
        if _spelt(token) or (run and token in _SPACED_SEPARATORS):
            run.append(token)
            continue
        if run and (end := _SPELT_LAST.match(token)) is not None:
            close_run(end.group(1), end.group(2))
            continue
        if run:  # most tokens are words with no spelt run before them
            close_run()
        joined.append(token)
    if run:
        close_run()
    return joined


def deobfuscate(text: str) -> str:
    """:func:`fold`, then leetspeak undone inside words and spaced-out letters joined
    (``f u c k  y o u`` -> ``fuck you``); repeated letters are kept (``niggger`` is not
    ``niger``)."""
    return fold_and_deobfuscate(text)[1]


# A line is normalised twice on its way through the daemon, moments apart: for the verdict
# cache's key (on the event loop) and by the embedded engine's lexicon (in its worker thread).
# The latest lines' results are kept (a few batches of the default concurrency, 256), so the
# second costs a lookup; only chat-sized lines, so what is kept stays small.
FOLD_MEMO_SIZE = 1024
FOLD_MEMO_MAX_CHARS = 500


def fold_and_deobfuscate(text: str) -> tuple[str, str]:
    """:func:`fold` and :func:`deobfuscate` of ``text``, folding it once."""
    if len(text) <= FOLD_MEMO_MAX_CHARS:
        return _fold_and_deobfuscate_memo(text)
    return _fold_and_deobfuscate(text)


def _fold_and_deobfuscate(text: str) -> tuple[str, str]:
    # Two or more spaces part words spelt out letter by letter: "f u c k  y o u".
    groups = []
    parts = _WIDE_SPACE.split(text)
    folded_parts = [fold(part) for part in parts]
    for folded in folded_parts:
        tokens = [token for token in folded.split(" ") if token]
        if folded.replace(" ", "").isalpha():  # words of letters only: no leetspeak to undo
            if all(len(token) > 1 for token in tokens):  # ...and no letter spelt alone
                groups.append(folded)
                continue
            groups.append(" ".join(_join_spaced_letters(tokens)))
            continue
        tokens = _join_spaced_letters(tokens)
        groups.append(" ".join(_unleet(token) for token in tokens))
    # One group (no wide space) folds as the whole text does.
    folded_text = folded_parts[0] if len(parts) == 1 else fold(text)
    return folded_text, " ".join(g for g in groups if g)


# lru_cache is thread-safe: the event loop and the engine's worker thread share it.
_fold_and_deobfuscate_memo = lru_cache(maxsize=FOLD_MEMO_SIZE)(_fold_and_deobfuscate)


def squeeze_repeats(text: str) -> str:
    """Letters repeated three or more times written once (``fuuuck`` -> ``fuck``)."""
    return _REPEATS.sub(r"\1", text)


def canonical(text: str) -> str:
    """:func:`deobfuscate`, then letters repeated three or more times written once: what the
    verdict cache keys on and the embedded engine's model scores."""
    return squeeze_repeats(deobfuscate(text))
