"""Discuse's check API: request bodies and replies. No I/O here.

Facts from the provider's document (kept here so the project does not depend on it):

- ``POST https://api.discuse.com/api/v1/check`` with headers ``x-client-id`` (organisation)
  and ``x-client-secret`` (project).
- Body: ``{"request": {"media": {"text": ..., "image_url": [...], "gif_url": [...]},
  "user_id": ...}, "settings": {"project_id": N}}``; every key is optional. Media URLs must be
  public.
- Reply: ``sentiment`` (``toxic``, ``profanity``, ``threat``, ``insult``: 0..1, and ``hit``),
  ``images`` and ``gifs`` (``porn``, ``sexual``, ``neutral``, ``result.category``, ``hit``,
  ``status``), ``language`` (``expected``, ``detected``, ``hit``), ``links``, ``badwords``,
  ``antivirus`` (announced, not yet available) and an overall ``hits``. A ``hit`` means the
  project's own thresholds were crossed.
- No rate limit, but heavy use is throttled: requests just take longer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from chatmod.protocols.replies import as_number, json_object

CHECK_PATH = "/api/v1/check"
CLIENT_ID_HEADER = "x-client-id"
CLIENT_SECRET_HEADER = "x-client-secret"
TEXT_SCORES = ("toxic", "profanity", "threat", "insult")
MEDIA_SCORES = ("porn", "sexual")

_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_IMAGE = re.compile(r"\.(?:png|jpe?g|webp|bmp)(?:[?#]|$)", re.IGNORECASE)
_GIF = re.compile(r"\.gif(?:[?#]|$)", re.IGNORECASE)


class CheckReplyError(ValueError):
    """A reply that cannot be read as a check result."""


def media_urls(text: str, images: Iterable[str], from_text: bool = True
               ) -> tuple[list[str], list[str]]:
    """Image and GIF URLs: the message's own, then links in its text that look like one."""
    candidates = list(images) + (_URL.findall(text) if from_text else [])
    image_urls: list[str] = []
    gif_urls: list[str] = []
    for url in dict.fromkeys(candidates):  # de-duplicated, in order
        if _GIF.search(url):
            gif_urls.append(url)
        elif _IMAGE.search(url) or url in images:
            image_urls.append(url)
    return image_urls, gif_urls


def check_request(text: str, image_urls: list[str], gif_urls: list[str],
                  user_id: str | None, project_id: int | None) -> bytes:
    media: dict[str, Any] = {"text": text}
    if image_urls:
        media["image_url"] = image_urls
    if gif_urls:
        media["gif_url"] = gif_urls
    request: dict[str, Any] = {"media": media}
    if user_id:
        request["user_id"] = user_id
    body: dict[str, Any] = {"request": request}
    if project_id is not None:
        body["settings"] = {"project_id": project_id}
    return orjson.dumps(body)


@dataclass(frozen=True)
class CheckResult:
    scores: Mapping[str, float]  # "toxic", ..., "images.porn", "gifs.sexual"
    hits: tuple[str, ...]  # the sections that crossed the project's thresholds


def parse_check_reply(data: bytes | str) -> CheckResult:
    reply = json_object(data, CheckReplyError)
    scores: dict[str, float] = {}
    hits: list[str] = []
    sentiment = reply.get("sentiment")
    if isinstance(sentiment, dict):
        for key in TEXT_SCORES:
            if (n := as_number(sentiment.get(key))) is not None:
                scores[key] = n
    for section in ("images", "gifs"):
        media = reply.get(section)
        if isinstance(media, dict):
            for key in MEDIA_SCORES:
                if (n := as_number(media.get(key))) is not None:
                    scores[f"{section}.{key}"] = n
    for section in ("sentiment", "images", "gifs", "language", "links", "badwords",
                    "antivirus"):
        value = reply.get(section)
        if isinstance(value, dict) and value.get("hit") is True:
            hits.append(section)
    if not scores and not hits and "hits" not in reply:
        raise CheckReplyError("no sentiment, media or hits in the reply")
    return CheckResult(scores, tuple(hits))


def verdict_for(result: CheckResult, flag_threshold: float, delete_threshold: float
                ) -> tuple[str, float]:
    """``delete`` at or above ``delete_threshold`` on any score, ``flag`` at or above
    ``flag_threshold`` or when a section was hit by the project's own thresholds, else
    ``pass``; with the highest score."""
    score = max(result.scores.values(), default=0.0)
    if score >= delete_threshold:
        return "delete", score
    if score >= flag_threshold or result.hits:
        return "flag", score
    return "pass", score
