"""Copypasta: a phrase said again and again in one chat line."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

# Copypasta: a phrase of three words (or symbol groups) or more said at least twice, or of two
# said three times...
REPEATED_PHRASE_WORDS = 3
REPEATED_PHRASE_TIMES = 2
REPEATED_PAIR_TIMES = 3
REPEATED_PHRASE_CHARS = 14
LONGEST_REPEATED_PHRASE = 6
MAX_PHRASE_SCAN_WORDS = 200  # a chat line's worth; the scan costs words x phrase sizes


def repeated_phrase(words: list[str]) -> str | None:
    """A phrase of :data:`REPEATED_PHRASE_WORDS` to :data:`LONGEST_REPEATED_PHRASE` words and
    at least :data:`REPEATED_PHRASE_CHARS` characters said :data:`REPEATED_PHRASE_TIMES` times
    (a pair of words: :data:`REPEATED_PAIR_TIMES`) or more without overlapping (copypasta,
    "mods ban me ... mods ban me ..."); short chants ("gg wp gg wp") are not copypasta."""
    words = [word.strip(".,!?;:") for word in words[:MAX_PHRASE_SCAN_WORDS]]
    pairs = list(pairwise(words))
    if len(set(pairs)) == len(pairs):  # a phrase said twice has a pair of words said twice
        return None
    for size in range(REPEATED_PHRASE_WORDS - 1, LONGEST_REPEATED_PHRASE + 1):
        needed = REPEATED_PHRASE_TIMES if size >= REPEATED_PHRASE_WORDS else REPEATED_PAIR_TIMES
        last_start: dict[tuple[str, ...], int] = {}
        times: Counter[tuple[str, ...]] = Counter()
        for start in range(len(words) - size + 1):
            gram = tuple(words[start:start + size])
            if start - last_start.get(gram, -size) < size:
                continue
            last_start[gram] = start
            times[gram] += 1
            phrase = " ".join(gram)
            if (times[gram] >= needed and len(phrase) >= REPEATED_PHRASE_CHARS
                    and len(set(gram)) > 1):
                return phrase
    return None
