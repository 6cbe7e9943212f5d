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
- An image or GIF section's ``status`` is ``ok`` or ``error``; media that is not publicly
  reachable cannot be moderated. So ``error`` means nobody looked at the media: never a pass.
  It is not worth an engine error either (the fallback engines read text only, so they would
  pass an image no one saw, and asking again meets the same unreachable URL): the media is
  reported as unchecked and the verdict is at least ``flag``, for a person to look at.
- ``hits`` is not described beyond the sample, where it is true with sections hit: it is the
  overall result. True with no section we can name hit (a section added later, say) still
  means the project's thresholds were crossed: a flag, never a pass.
- No rate limit, but heavy use is throttled: requests just take longer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from chatmod.errors import ProtocolError
from chatmod.protocols.replies import as_number, json_object

CHECK_PATH = "/api/v1/check"
CLIENT_ID_HEADER = "x-client-id"
CLIENT_SECRET_HEADER = "x-client-secret"
TEXT_SCORES = ("toxic", "profanity", "threat", "insult")
MEDIA_SCORES = ("porn", "sexual")
MEDIA_SECTIONS = ("images", "gifs")
MEDIA_ERROR = "error"  # a media section's status when the media could not be checked
OVERALL_HIT = "hits"  # in CheckResult.hits: the overall flag, when no named section was hit

_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_IMAGE = re.compile(r"\.(?:png|jpe?g|webp|bmp)(?:[?#]|$)", re.IGNORECASE)
_GIF = re.compile(r"\.gif(?:[?#]|$)", re.IGNORECASE)


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
    unchecked: tuple[str, ...] = ()  # media sections Discuse could not check ("images", "gifs")


def parse_check_reply(data: bytes | str) -> CheckResult:
    """A check reply; :class:`ProtocolError` when it holds no result at all."""
    reply = json_object(data, ProtocolError)
    scores: dict[str, float] = {}
    sentiment = reply.get("sentiment")
    if isinstance(sentiment, dict):
        for key in TEXT_SCORES:
            if (n := as_number(sentiment.get(key))) is not None:
                scores[key] = n
    unchecked: list[str] = []
    for section in MEDIA_SECTIONS:
        media = reply.get(section)
        if isinstance(media, dict):
            for key in MEDIA_SCORES:
                if (n := as_number(media.get(key))) is not None:
                    scores[f"{section}.{key}"] = n
            if media.get("status") == MEDIA_ERROR:
                unchecked.append(section)
    # Every section that says it was hit, named in the document or not.
    hits = [section for section, value in reply.items()
            if isinstance(value, dict) and value.get("hit") is True]
    if not hits and reply.get(OVERALL_HIT) is True:
        hits.append(OVERALL_HIT)
    if not scores and not hits and not unchecked and OVERALL_HIT not in reply:
        raise ProtocolError("no sentiment, media or hits in the reply")
    return CheckResult(scores, tuple(hits), tuple(unchecked))


def verdict_for(result: CheckResult, flag_threshold: float, delete_threshold: float
                ) -> tuple[str, float]:
    """``delete`` at or above ``delete_threshold`` on any score, ``flag`` at or above
    ``flag_threshold``, when a section was hit by the project's own thresholds or when media
    could not be checked, else ``pass``; with the highest score."""
    score = max(result.scores.values(), default=0.0)
    if score >= delete_threshold:
        return "delete", score
    if score >= flag_threshold or result.hits or result.unchecked:
        return "flag", score
    return "pass", score
