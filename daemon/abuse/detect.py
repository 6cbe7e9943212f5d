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

from chatmod.abuse.alternation import alternation as _alternation
from chatmod.abuse.alternation import top_level_branches as _top_level_branches
from chatmod.abuse.copypasta import repeated_phrase
from chatmod.abuse.prefilter import Alternative, GatedRegex, KnownKeys, LineKeys, line_keys
from chatmod.textnorm import fold_and_deobfuscate, squeeze_repeats

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
THREAT = "threat"
SCAM = "scam"
# Words (and @mentions) that aim a line at a person, in the lexicon's languages.
TARGET_WORDS = frozenset((
    "you", "u", "ur", "your", "youre", "yours", "yourself", "ya", "yo", "ye", "eres", "tu",
    "usted", "du", "dich", "dir", "dein", "deine", "toi", "tes", "ton", "ta", "vous", "voce", "vc",
    "seu", "sua", "sei", "tuo", "tua", "jestes", "twoj", "twoja",
))
# Spanish and French "te" is an object pronoun ("je te jure", "te lo dije"): it aims a line
# only inside the lexicon's own patterns ("te voy a matar"), never as a word anywhere.
# A short line with one of these is about the speaker or a thing, not a call to someone's
# face ("im trash lol", "lifes a bitch", "this game is trash").
NOT_ADDRESSED = frozenset((
    "i", "im", "me", "my", "mine", "myself", "we", "us", "our", "this", "that", "the", "it",
    "its", "is", "was", "he", "hes", "she", "shes", "they", "theyre", "his", "her", "their",
    "ich", "mein", "meine", "das", "je", "moi", "mon", "cest", "ce", "eu", "meu", "minha",
    "mi", "mio", "esto", "este", "esta", "isso", "questo",
))
_MENTION = re.compile(r"(?:^|\s)@\w")
_WORDS = re.compile(r"[@\w]+")
# A line of this many words or fewer is name-calling, aimed at someone ("sale pute").
NAME_CALLING_WORDS = 3
# ...unless it is an exclamation about something ("what an idiot", "puta que pariu").
EXCLAIMING = frozenset(("what", "such", "so", "quel", "quelle", "que"))
EXCLAMATION = re.compile(r"^(?:que|what an?|so ein|quel|quelle|such a)\b|\bque pariu\b")
# Spam shapes: one word said again and again, a syllable drummed, one character held down.
REPEATED_WORD_TIMES = 5
# Copypasta (a phrase said twice, two words said three times): chatmod.abuse.copypasta;
# ...and shouting: a line this long written in capitals only.
SHOUTED_LETTERS = 30
SHOUTED_WORDS = 6
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


def _word_pattern(words: Iterable[str], dispatch: bool = True) -> GatedRegex | None:
    """Whole words, each letter allowed to repeat ("fuuuck"), spaces as any spacing."""
    alternatives = []
    ordered = sorted(set(words), key=len, reverse=True)
    for word in ordered:
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
    combined = re.compile(
        rf"(?<![a-z])(?:{_alternation(alternatives) if dispatch else '|'.join(alternatives)})"
        rf"{WORD_ENDINGS}(?![a-z])")
    # A match has the word's letters in order (the keys collapse repeats and spacing).
    return GatedRegex(combined, [
        Alternative.word(rf"(?<![a-z])(?:{alternative}){WORD_ENDINGS}(?![a-z])", word)
        for word, alternative in zip(ordered, alternatives, strict=True)], masks=True)


def _patterns(sources: Iterable[str], dispatch: bool = True) -> GatedRegex | None:
    """One regular expression for a list. The alternatives that start at a word boundary share
    one leading ``\\b``: the engine then skips a position inside a word at once instead of
    trying every alternative there (a lexicon of a few hundred patterns costs 2-3 times less)."""
    at_word: list[str] = []
    others: list[str] = []
    for source in sources:
        branches = _top_level_branches(source)
        if all(branch.startswith(WORD_BOUNDARY) for branch in branches):
            at_word.append("|".join(branch[len(WORD_BOUNDARY):] for branch in branches))
        else:
            others.append(source)
    parts = [rf"\b(?:{_alternation(at_word, dispatch)})"] if at_word else []
    parts.extend(f"(?:{source})" for source in others)
    if not parts:
        return None
    # The one regex tries the word-boundary alternatives first, then the others.
    alone = [rf"\b(?:{source})" for source in at_word] + [f"(?:{s})" for s in others]
    return GatedRegex(re.compile("|".join(parts)), [Alternative.pattern(s) for s in alone],
                      masks=False)


WORD_BOUNDARY = r"\b"


@dataclass(frozen=True, slots=True)
class _Category:
    name: str
    score: float
    words: GatedRegex | None
    patterns: GatedRegex | None

    def match(self, deobfuscated: str, canonical: str, deobfuscated_keys: LineKeys | None,
              canonical_keys: LineKeys | None) -> str | None:
        """The text the words (on ``deobfuscated``) or else the patterns (on ``canonical``)
        match; the keys are those of the texts (None: unknown)."""
        if self.words is not None and (
                found := self.words.search(deobfuscated, deobfuscated_keys)) is not None:
            return found.group(0)
        if self.patterns is not None and (
                found := self.patterns.search(canonical, canonical_keys)) is not None:
            return found.group(0)
        return None


class Lexicon:
    """The compiled lexicon; :meth:`assess` is thread-safe (it only reads)."""

    def __init__(self, table: Mapping[str, Any], *, dispatch: bool = True,
                 prefilter: bool = True) -> None:
        """``dispatch``: alternations grouped by first character (:func:`_alternation`);
        False builds the plain alternations (the same matches; kept to prove it).
        ``prefilter``: skip the regexes a line's keys rule out (:mod:`chatmod.abuse.prefilter`);
        False runs every one (the same matches; kept to prove it)."""
        self._prefilter = prefilter
        self.categories = [
            _Category(name, float(section["score"]),
                      _word_pattern(section.get("words", ()), dispatch),
                      _patterns(section.get("patterns", ()), dispatch))
            for name, section in table.items() if "score" in section
        ]
        self._by_name = {category.name: category for category in self.categories}
        abuse = table[TARGETED_ABUSE]
        self._strong = _word_pattern(abuse["strong_insults"], dispatch)
        self._strong_score = float(abuse["score"])
        mild = table[MILD_INSULT]
        self._needs_target = _word_pattern(mild["needs_target"], dispatch)
        self._mild_alone = _word_pattern(set(mild["words"]) - set(mild["needs_target"]), dispatch)
        self._mild_score = float(mild["score"])
        self._profanity_score = float(table[PROFANITY]["score"])
        self._mild_profanity = frozenset(table[PROFANITY]["mild"])
        self._spam_score = float(table[SPAM]["score"])
        scam = table[SCAM]
        self._scam_score = float(scam["score"])
        self._link_words = tuple(scam["suspicious_link_words"])
        self._cheap_domains = frozenset(scam["cheap_domains"])
        self._trusted = tuple(scam["trusted_domains"])
        self._harmless = _patterns(table["harmless"]["patterns"], dispatch)
        threat = table[THREAT]
        self._game_context = _patterns(threat["game_context"], dispatch)
        self._real_life = _patterns(threat["real_life"], dispatch)
        self._game_violence = _patterns(threat["game_violence"], dispatch)
        self._variants = _variant_pattern(table["variants"])
        self._variant_roots = {spelling: root for root, spellings in table["variants"].items()
                               for spelling in spellings}
        gated = [*(c.words for c in self.categories), *(c.patterns for c in self.categories),
                 self._strong, self._needs_target, self._mild_alone, self._harmless,
                 self._game_context, self._real_life, self._game_violence]
        self._known_keys = KnownKeys.of(k for g in gated if g is not None for k in g.keys)

    @classmethod
    def shipped(cls) -> Lexicon:
        """The lexicon shipped inside the package."""
        return _shipped()

    def assess(self, text: str) -> Assessment:
        """The strongest category ``text`` (its first :data:`MAX_ASSESSED_CHARS`) matches."""
        text = text[:MAX_ASSESSED_CHARS]
        folded, deobfuscated = fold_and_deobfuscate(text)
        deobfuscated = deobfuscated.replace("'", "").replace("\u2019", "")
        if self._variants is not None:  # "phuck", "fuk", "biatch": the word they spell
            deobfuscated = self._variants.sub(
                lambda m: self._variant_roots[m.group(0)], deobfuscated)
        canonical = squeeze_repeats(deobfuscated)
        keys = self._keys(canonical)  # the canonical line's keys serve the deobfuscated one
        # In-game violence ("ill shoot you first next round") is no threat; "irl" makes it one.
        in_game = (self._game_context is not None
                   and self._game_context.search(canonical, keys) is not None
                   and (self._real_life is None
                        or self._real_life.search(canonical, keys) is None))
        found: list[tuple[float, str, str]] = []
        for category in self.categories:
            if category.name in (MILD_INSULT, PROFANITY, SPAM):
                continue  # scored below, with their conditions
            if category.name == THREAT and in_game:
                continue
            matched = category.match(deobfuscated, canonical, keys, keys)
            if matched is not None:
                found.append((category.score, category.name, matched))
        model_text, model_keys = canonical, keys
        if self._harmless is not None:  # "Moby Dick" says no "dick"
            model_text = self._harmless.sub(" ", model_text, keys)
            model_keys = keys if model_text == canonical else self._keys(model_text)
        found.extend(self._aimed(deobfuscated, canonical, model_text, keys, model_keys,
                                 "@" in folded and _MENTION.search(folded) is not None))
        found.extend(self._links(folded))
        if " . " in folded:  # a link spelt out letter by letter: "g i f t . x y z"
            found.extend(self._links(deobfuscated))
        found.extend(self._spam(text, canonical, keys))
        if in_game and self._game_violence is not None:
            model_text = self._game_violence.sub(" ", model_text, model_keys)
        model_text = " ".join(model_text.split())
        if not found:
            return Assessment(None, 0.0, "", model_text)
        score, name, matched = max(found)
        return Assessment(name, score, matched, model_text)

    def _category(self, name: str) -> _Category:
        return self._by_name[name]

    def _keys(self, text: str) -> LineKeys | None:
        return line_keys(text, self._known_keys) if self._prefilter else None

    def _aimed(self, deobfuscated: str, canonical: str, harmless_removed: str,
               keys: LineKeys | None, harmless_removed_keys: LineKeys | None,
               mentions: bool) -> list[tuple[float, str, str]]:
        """Insults and profanity: delete-strong when aimed at someone, else flag."""
        found: list[tuple[float, str, str]] = []
        words = _WORDS.findall(canonical)
        # "sale pute", "fucking idiot": a short line of only an insult calls someone names;
        # "im trash lol" or "lifes a bitch" is about the speaker or a thing.
        short = (len(words) <= NAME_CALLING_WORDS
                 and not any(word in NOT_ADDRESSED for word in words)
                 and not _says_what_something_is(words))
        name_calling = short and EXCLAMATION.search(canonical) is None
        aimed = name_calling or mentions or not TARGET_WORDS.isdisjoint(words)
        canonical, canonical_keys = harmless_removed, harmless_removed_keys
        if self._harmless is not None:
            kept = self._harmless.sub(" ", deobfuscated, keys)
            keys = keys if kept == deobfuscated else self._keys(kept)
            deobfuscated = kept
        strong = self._strong.search(deobfuscated, keys) if self._strong else None
        profane = self._category(PROFANITY).match(deobfuscated, canonical, keys, canonical_keys)
        phrases = self._category(MILD_INSULT).patterns
        mild_phrase = phrases.search(canonical, canonical_keys) if phrases is not None else None
        mild = mild_phrase.group(0) if mild_phrase is not None else None
        mild_word = self._mild_alone.search(deobfuscated, keys) if self._mild_alone else None
        target_word = (self._needs_target.search(deobfuscated, keys)
                       if self._needs_target else None)
        # "que burro", "what a clown": a short exclamation is about someone too.
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

    def _links(self, folded: str) -> list[tuple[float, str, str]]:
        found: list[tuple[float, str, str]] = []
        if "." not in folded and ":" not in folded:
            return found  # a link has "www." or "://" or a dotted name
        for match in URL.finditer(folded):
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

    def _spam(self, text: str, canonical: str,
              keys: LineKeys | None) -> list[tuple[float, str, str]]:
        words = canonical.split()
        distinct = len(set(words))
        if len(words) - distinct >= REPEATED_WORD_TIMES - 1:  # a word may be said 5 times
            word, times = Counter(words).most_common(1)[0]
            if times >= REPEATED_WORD_TIMES:
                return [(self._spam_score, SPAM, word)]
        # A phrase said twice needs a word said twice: most lines have none.
        phrase = repeated_phrase(words) if distinct < len(words) else None
        if phrase is not None:
            return [(self._spam_score, SPAM, phrase)]
        # The letters only of a line long enough to shout (most lines have few capitals).
        if len(words) >= SHOUTED_WORDS and sum(map(str.isupper, text)) >= SHOUTED_LETTERS:
            letters = [c for c in text if c.isalpha()]
            if len(letters) >= SHOUTED_LETTERS and all(c.isupper() for c in letters):
                return [(self._spam_score, SPAM, text[:20])]
        casefolded = text.casefold()
        for pattern in (REPEATED_PAIR, HELD_CHARACTER):
            if (found := pattern.search(casefolded)) is not None:
                return [(self._spam_score, SPAM, found.group(0)[:20])]
        matched = self._category(SPAM).match(canonical, canonical, keys, keys)
        return [] if matched is None else [(self._spam_score, SPAM, matched)]


def _says_what_something_is(words: list[str]) -> bool:
    """ "lifes a bitch", "hes a clown": a subject, then "a" (not "what a", "such a")."""
    return any(word in ("a", "an") and words[index - 1] not in EXCLAIMING
               for index, word in enumerate(words) if index)


def _variant_pattern(variants: Mapping[str, Iterable[str]]) -> re.Pattern[str] | None:
    spellings = sorted({s for group in variants.values() for s in group}, key=len, reverse=True)
    if not spellings:
        return None
    return re.compile(rf"(?<![a-z])(?:{'|'.join(map(re.escape, spellings))})(?![a-z])")


@cache
def _shipped() -> Lexicon:
    data = resources.files("chatmod.abuse").joinpath(LEXICON_FILE).read_text(encoding="utf-8")
    return Lexicon(tomllib.loads(data))
