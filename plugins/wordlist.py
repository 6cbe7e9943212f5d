"""The wordlist engine: whole-word matches against operator-given lists. No model, no network.

Useful as a cheap fallback, for deployments that only need a blocklist, and (with empty lists)
as a no-op engine to measure the pipeline itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chatmod.config.schema import setting
from chatmod.core.interfaces import Engine
from chatmod.core.model import DELETE, FLAG, PASS, Message, Verdict

ROUTE_LOCAL = "local"


@dataclass(frozen=True)
class WordlistConfig:
    """Whole-word, case-insensitive matches; no model."""

    delete: tuple[str, ...] = setting((), help="words whose presence gives delete")
    flag: tuple[str, ...] = setting((), help="words whose presence gives flag")


def compile_words(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _patterns(config: WordlistConfig) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """The lists to search, in order (delete before flag), leaving out the empty ones."""
    compiled = ((DELETE, compile_words(config.delete)), (FLAG, compile_words(config.flag)))
    return tuple((action, pattern) for action, pattern in compiled if pattern is not None)


class WordlistEngine(Engine[WordlistConfig]):
    """``delete`` if a delete-word appears, else ``flag`` if a flag-word appears, else ``pass``."""

    Config = WordlistConfig
    verdict_routes = (ROUTE_LOCAL,)
    enforces_own_timeout = True  # it never awaits
    worth_caching = False  # a regex search costs less than the cache's normalised key

    def __init__(self, name: str, config: WordlistConfig) -> None:
        super().__init__(name, config)
        self._patterns = _patterns(config)
        # Most messages pass: they share one verdict (frozen, its empty scores never written)
        # rather than each making its own.
        self._pass = Verdict(PASS, 0.0, self.name, ROUTE_LOCAL)

    def reconfigure(self, config: WordlistConfig) -> bool:
        self.config = config
        self._patterns = _patterns(config)
        return True

    async def moderate(self, message: Message) -> Verdict:
        return self.verdict_for(message.text)

    async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict | Exception]:
        # Answers at once: the pipeline hands it whole batches (no task per message).
        if not self._patterns:  # no word to look for (the no-op engine): every one passes
            return [self._pass] * len(messages)
        verdict_for = self.verdict_for
        return [verdict_for(message.text) for message in messages]

    def verdict_for(self, text: str) -> Verdict:
        for action, pattern in self._patterns:
            if (match := pattern.search(text)) is not None:
                return Verdict(action, 1.0, self.name, ROUTE_LOCAL,
                               {"matched": match.group(0).lower()})
        return self._pass
