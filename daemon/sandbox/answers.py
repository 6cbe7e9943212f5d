"""What the sandbox answers, with no I/O: its verdicts (a word list, or the local model) and
Chatsight's and Discuse's replies in their documented shapes."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

DELETE_WORDS = ("idiot", "stupid", "moron", "fuck", "fucking", "shit", "bitch", "kill yourself")
FLAG_WORDS = ("damn", "crap", "dumb", "sucks", "hate", "shut up")


Judgement = tuple[str, float]  # (suggested action, profanity probability)


class WordlistJudge:
    """``delete`` for a word in :data:`DELETE_WORDS`, ``flag`` for :data:`FLAG_WORDS`."""

    def __init__(self) -> None:
        def pattern(words: Sequence[str]) -> re.Pattern[str]:
            return re.compile(r"(?<!\w)(?:{})(?!\w)".format("|".join(map(re.escape, words))), re.I)

        self._delete = pattern(DELETE_WORDS)
        self._flag = pattern(FLAG_WORDS)

    def __call__(self, texts: Sequence[str]) -> list[Judgement]:
        return [
            ("delete", 0.97) if self._delete.search(t)
            else ("flag", 0.6) if self._flag.search(t)
            else ("pass", 0.02)
            for t in texts
        ]


class ModelJudge:
    """The local model's probability with the local engine's default thresholds."""

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict = predict_prob

    def __call__(self, texts: Sequence[str]) -> list[Judgement]:
        judged: list[Judgement] = []
        for p in self._predict(list(texts)):
            probability = float(p)
            action = "delete" if probability >= 0.9 else "flag" if probability >= 0.5 else "pass"
            judged.append((action, round(probability, 4)))
        return judged


def make_judge(kind: str) -> Callable[[Sequence[str]], list[Judgement]]:
    if kind == "wordlist":
        return WordlistJudge()
    if kind == "local":
        return ModelJudge()
    try:
        return ModelJudge()
    except ImportError:
        return WordlistJudge()


def moderation_reply(action: str, probability: float, reference: str | None) -> bytes:
    """A reply in the documented shape (including its quirks: a text baseline in engine2)."""
    return orjson.dumps(moderation_body(action, probability, reference))


def moderation_body(action: str, probability: float, reference: str | None = None
                    ) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "modelTrainingWords": [], "computeTime": 1, "times": [0.4, 0.2],
        "uuid": "Future Placeholder", "warningIssued": False, "endpoint": "sandbox",
        "alloc": "sandbox", "latencyAlert": False,
    }
    if reference is not None:
        metadata["self_reference"] = reference
    return {
        "api": "chatsight-lang-text",
        "success": True,
        "response": {
            "engine1": {"raceInvocation": 0.0001, "politicalLanguage": 0.0026,
                        "baseline": round(1.0 - probability, 4)},
            "engine2": {"raceInvocation": 0.00004, "defensive": 0.0001,
                        "baseline": "Not required in engine2", "aggressive": 0.00005,
                        "vulgar": probability},
            "engine3": {"invoked": False},
            "suggestedAction": [action, probability],
            "patches": {"extremistFormattingPatch": False, "curseWordOverride": False,
                        "sentimentScore": 0.1},
            "insights": {"dialectPrediction": ["english", 0.37]},
            "metadata": metadata,
        },
        "TOS": "https://announce.chatsight.ai/terms_of_service",
        "version": "sandbox",
    }


def username_reply(answer: str) -> bytes:
    """A username check's reply (beta): ``response.usernameCheck``."""
    return orjson.dumps({"api": "chatsight-lang-text", "success": True,
                         "response": {"usernameCheck": answer}})


def error_body(message: str) -> bytes:
    return orjson.dumps({"api": "chatsight-lang-text", "success": False, "response": message})


NSFW_MARKER = "nsfw"  # an image URL containing it is judged pornographic (deterministic)
# An image URL containing it cannot be fetched: its section's status is "error", as Discuse
# answers for media that is not publicly reachable.
UNREACHABLE_MARKER = "unreachable"


def discuse_reply(probability: float, images: list[str], gifs: list[str]) -> bytes:
    """A check reply in the documented shape."""
    def media(urls: list[str]) -> dict[str, Any]:
        if not urls:
            return {"result": {}}
        if any(UNREACHABLE_MARKER in url.lower() for url in urls):
            return {"result": {}, "status": "error", "hit": False}
        bad = any(NSFW_MARKER in url.lower() for url in urls)
        porn = 0.95 if bad else 0.02
        return {"result": {"category": "porn" if bad else "neutral",
                           "confidence": porn if bad else 0.96},
                "status": "ok", "porn": porn, "sexual": 0.03, "neutral": 1 - porn,
                "hit": bad}

    images_section, gifs_section = media(images), media(gifs)
    sentiment = {"toxic": probability, "profanity": probability,
                 "threat": round(probability / 10, 4), "insult": round(probability * 0.8, 4),
                 "hit": probability >= 0.5}
    return orjson.dumps({
        "trace_context": None,
        "links": {"status": "", "hit": False}, "badwords": {"status": "", "hit": False},
        "antivirus": {"status": "", "hit": False},
        "language": {"expected": "en", "detected": "en", "hit": False},
        "images": images_section, "gifs": gifs_section, "sentiment": sentiment,
        "hits": bool(sentiment["hit"] or images_section.get("hit") or gifs_section.get("hit")),
    })
