"""What a profanity model cannot see: threats, slurs, self-harm encouragement, sexual
harassment, scam links, hate, insults aimed at a person, spam, in several languages.

Pure and offline: the lexicon (``lexicon.toml`` beside this module, shipped in the wheel) is
read once; :meth:`Lexicon.assess` matches one line against it after
:mod:`chatmod.textnorm`, and says what text the profanity model should still score (the line
without the harmless phrases that fool it, "Moby Dick", "sick play").
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from chatmod.textnorm import deobfuscate, fold, squeeze_repeats

LEXICON_FILE = "lexicon.toml"
# Words at least this long may be split by a space and still match ("nig ger").
MIN_SPLIT_WORD = 5
# Endings a listed word may take ("retards", "faggots", "fucked").
WORD_ENDINGS = "(?:s|es|z|ed|ing|er|ers)?"
# Categories that depend on whether the line is aimed at someone.
TARGETED_ABUSE = "targeted_abuse"
MILD_INSULT = "mild_insult"
PROFANITY = "profanity"
SPAM = "spam"
SCAM = "scam"
# Words (and @mentions) that aim a line at a person, in the lexicon's languages.
TARGET_WORDS = frozenset((
    "you", "u", "ur", "your", "youre", "yours", "yourself", "ya", "yo", "ye", "eres", "tu", "te",
    "usted", "du", "dich", "dir", "dein", "deine", "toi", "tes", "ton", "ta", "vous", "voce", "vc",
    "seu", "sua",
))
_WORDS = re.compile(r"[@\w]+")
# A line of this many words or fewer is name-calling, aimed at someone ("sale pute").
NAME_CALLING_WORDS = 3
# ...unless it is an exclamation about something ("what an idiot", "puta que pariu").
EXCLAMATION = re.compile(r"^(?:que|what an?|so ein|quel|quelle|such a)\b|\bque pariu\b")
# Spam shapes: one word said again and again, a syllable drummed, one character held down.
REPEATED_WORD_TIMES = 5
REPEATED_PAIR = re.compile(r"(\w\w)\1{7,}")
HELD_CHARACTER = re.compile(r"(\S)\1{9,}")
# Dotted names are found first and their last label checked in code: the one-regex form
# (labels, then a letters-only last label) backtracks quadratically on "a.a.a.a...".
URL = re.compile(r"(?:https?://|www\.)[^\s]+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:/[^\s]*)?",
                 re.IGNORECASE)
TOP_LEVEL_DOMAIN = re.compile(r"[a-z]{2,12}")
# The lexicon reads at most this much of a line (a chat line is a few hundred characters);
# its patterns cost time in proportion to the length.
MAX_ASSESSED_CHARS = 2000
URL_HOST = re.compile(r"^(?:https?://)?(?:www\.)?([^/\s:?#]+)", re.IGNORECASE)
# Bare dotted words that are not links ("e.g", "i.e", "lol.jk" is rare enough to ignore).
MIN_LINK_LABEL = 2


@dataclass(frozen=True, slots=True)
class Assessment:
    """The strongest category matched (None: none), its score (0.0: none), the text that
    matched it, and the text the profanity model should score."""

    category: str | None
    score: float
    matched: str
    model_text: str


def _word_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """Whole words, each letter allowed to repeat ("fuuuck"), spaces as any spacing."""
    alternatives = []
    for word in sorted(set(words), key=len, reverse=True):
        # A long word may be split by one space ("nig ger").
        gap = r"\s?" if len(word) >= MIN_SPLIT_WORD and " " not in word else ""
        parts = []
        for index, char in enumerate(word):
            if char == " ":
                parts.append(r"\s+")
            elif char.isalpha() and index:
                # "*" masks a letter ("f*ggot"), never the first.
                parts.append(f"(?:{re.escape(char)}+|\\*)")
            elif char.isalpha():
                parts.append(re.escape(char) + "+")
            else:
                parts.append(re.escape(char))
        alternatives.append(gap.join(parts))
    if not alternatives:
        return None
    return re.compile(rf"(?<![a-z])(?:{'|'.join(alternatives)}){WORD_ENDINGS}(?![a-z])")


def _patterns(sources: Iterable[str]) -> re.Pattern[str] | None:
    joined = "|".join(f"(?:{source})" for source in sources)
    return re.compile(joined) if joined else None


@dataclass(frozen=True, slots=True)
class _Category:
    name: str
    score: float
    words: re.Pattern[str] | None
    patterns: re.Pattern[str] | None

    def match(self, deobfuscated: str, canonical: str) -> str | None:
        for pattern, text in ((self.words, deobfuscated), (self.patterns, canonical)):
            if pattern is not None and (found := pattern.search(text)) is not None:
                return found.group(0)
        return None


class Lexicon:
    """The compiled lexicon; :meth:`assess` is thread-safe (it only reads)."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self.categories = [
            _Category(name, float(section["score"]), _word_pattern(section.get("words", ())),
                      _patterns(section.get("patterns", ())))
            for name, section in table.items() if "score" in section
        ]
        abuse = table[TARGETED_ABUSE]
        self._strong = _word_pattern(abuse["strong_insults"])
        self._strong_score = float(abuse["score"])
        mild = table[MILD_INSULT]
        self._needs_target = _word_pattern(mild["needs_target"])
        self._mild_alone = _word_pattern(set(mild["words"]) - set(mild["needs_target"]))
        self._mild_score = float(mild["score"])
        self._profanity_score = float(table[PROFANITY]["score"])
        self._mild_profanity = frozenset(table[PROFANITY]["mild"])
        self._spam_score = float(table[SPAM]["score"])
        scam = table[SCAM]
        self._scam_score = float(scam["score"])
        self._link_words = tuple(scam["suspicious_link_words"])
        self._cheap_domains = frozenset(scam["cheap_domains"])
        self._trusted = tuple(scam["trusted_domains"])
        self._harmless = _patterns(table["harmless"]["patterns"])

    @classmethod
    def shipped(cls) -> Lexicon:
        """The lexicon shipped inside the package."""
        return _shipped()

    def assess(self, text: str) -> Assessment:
        """The strongest category ``text`` (its first :data:`MAX_ASSESSED_CHARS`) matches."""
        text = text[:MAX_ASSESSED_CHARS]
        deobfuscated = deobfuscate(text).replace("'", "").replace("\u2019", "")
        canonical = squeeze_repeats(deobfuscated)
        found: list[tuple[float, str, str]] = []
        for category in self.categories:
            if category.name in (MILD_INSULT, PROFANITY, SPAM):
                continue  # scored below, with their conditions
            matched = category.match(deobfuscated, canonical)
            if matched is not None:
                found.append((category.score, category.name, matched))
        found.extend(self._aimed(deobfuscated, canonical))
        found.extend(self._links(text))
        found.extend(self._spam(text, canonical))
        model_text = canonical
        if self._harmless is not None:
            model_text = " ".join(self._harmless.sub(" ", canonical).split())
        if not found:
            return Assessment(None, 0.0, "", model_text)
        score, name, matched = max(found)
        return Assessment(name, score, matched, model_text)

    def _category(self, name: str) -> _Category:
        return next(c for c in self.categories if c.name == name)

    def _aimed(self, deobfuscated: str, canonical: str) -> list[tuple[float, str, str]]:
        """Insults and profanity: delete-strong when aimed at someone, else flag."""
        found: list[tuple[float, str, str]] = []
        words = _WORDS.findall(canonical)
        name_calling = (len(words) <= NAME_CALLING_WORDS
                        and EXCLAMATION.search(canonical) is None)
        aimed = name_calling or any(
            word in TARGET_WORDS or word.startswith("@") for word in words)
        if self._harmless is not None:  # "Moby Dick" says no "dick"
            canonical = self._harmless.sub(" ", canonical)
            deobfuscated = self._harmless.sub(" ", deobfuscated)
        strong = self._strong.search(deobfuscated) if self._strong else None
        profane = self._category(PROFANITY).match(deobfuscated, canonical)
        phrases = self._category(MILD_INSULT).patterns
        mild_phrase = phrases.search(canonical) if phrases is not None else None
        mild = mild_phrase.group(0) if mild_phrase is not None else None
        mild_word = self._mild_alone.search(deobfuscated) if self._mild_alone else None
        target_word = self._needs_target.search(deobfuscated) if self._needs_target else None
        # "que burro", "what a clown": a short exclamation is about someone too.
        short = len(words) <= NAME_CALLING_WORDS
        insult = mild or (mild_word.group(0) if mild_word else None) or (
            target_word.group(0) if target_word and (aimed or short) else None)
        if strong is not None:
            found.append((self._strong_score if aimed else self._profanity_score,
                          TARGETED_ABUSE if aimed else PROFANITY, strong.group(0)))
        if profane is not None:
            if (aimed and insult is not None
                    and squeeze_repeats(profane) not in self._mild_profanity):
                found.append((self._strong_score, TARGETED_ABUSE, f"{profane} {insult}"))
            found.append((self._profanity_score, PROFANITY, profane))
        if insult is not None:
            found.append((self._mild_score, MILD_INSULT, insult))
        return found

    def _links(self, text: str) -> list[tuple[float, str, str]]:
        found: list[tuple[float, str, str]] = []
        for match in URL.finditer(fold(text)):
            link = match.group(0)
            host_match = URL_HOST.match(link)
            if host_match is None:
                continue
            host = host_match.group(1).lower()
            labels = host.split(".")
            if len(labels) < MIN_LINK_LABEL or not TOP_LEVEL_DOMAIN.fullmatch(labels[-1]):
                continue
            if any(host == t or host.endswith("." + t) for t in self._trusted):
                continue
            if labels[-1] in self._cheap_domains or any(w in link for w in self._link_words):
                found.append((self._scam_score, SCAM, link))
        return found

    def _spam(self, text: str, canonical: str) -> list[tuple[float, str, str]]:
        words = canonical.split()
        if words:
            word, times = Counter(words).most_common(1)[0]
            if times >= REPEATED_WORD_TIMES:
                return [(self._spam_score, SPAM, word)]
        for pattern in (REPEATED_PAIR, HELD_CHARACTER):
            if (found := pattern.search(text.casefold())) is not None:
                return [(self._spam_score, SPAM, found.group(0)[:20])]
        matched = self._category(SPAM).match(canonical, canonical)
        return [] if matched is None else [(self._spam_score, SPAM, matched)]


@cache
def _shipped() -> Lexicon:
    data = resources.files("chatmod.abuse").joinpath(LEXICON_FILE).read_text(encoding="utf-8")
    return Lexicon(tomllib.loads(data))
