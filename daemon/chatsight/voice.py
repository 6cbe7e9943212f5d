"""Chatsight voice jobs: requests and the transcript reply. No I/O here.

Facts from the provider's documents (kept here so the project does not depend on them):

- Submit: ``POST /stream/moderate`` with headers ``x-chatsight-api-auth`` and
  ``x-chatsight-api: chatsightvoice``, body ``{"url", "authorKey", "longRunning", "convoId"}``.
  ``authorKey`` is base64 of 32 random bytes, an AES-256 key chosen by the caller: the provider
  cannot recover results without it. ``convoId`` has at least 10 characters (the documents
  ask nothing else of it; the sample's is ``pizzaChatRoom``); ``longRunning`` is true for a
  static file.
- Fetch: ``POST /stream/<convoId>`` with the same headers and ``{"authorKey": "..."}``. The
  reply is a list ``[true, {"transcript": {"master": [[offset, sentence], ...], "speakers":
  {"0": [[offset, sentence], ...], ...}}, "moderationResults": [...]}, null]``; each result
  carries a full text-moderation reply at ``response`` plus ``voiceSTT`` (the sentence),
  ``convoID``, ``messageOrder`` and ``time`` (ms since the epoch, as a string).
- The document's own sample is not valid JSON: ``speakers`` is written as a list holding
  ``"0": [...]`` pairs, and no comma separates the result object from the ``null`` after it.
  A reply may carry ``speakers`` as an object, as a list (index = speaker) or in that
  malformed form; all three are read, and a missing comma after ``}`` or ``]`` is supplied.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from chatmod.chatsight.protocol import ChatsightResult, parse_result
from chatmod.errors import ProtocolError

SUBMIT_PATH = "/stream/moderate"
FETCH_PREFIX = "/stream/"
API_HEADER = "x-chatsight-api"
API_VOICE = "chatsightvoice"
AUTHOR_KEY_BYTES = 32
MIN_CONVO_ID = 10
# A conversation id made only of these names its state files as it is (and did before any
# other id was accepted); any other id is named by its digest, behind a '+' no such id has.
_FILE_SAFE_CONVO_ID = re.compile(r"[A-Za-z0-9._-]{10,128}")
_DIGEST_NAME_PREFIX = "convo+"


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a conversation, with its speaker and Chatsight's result for it."""

    order: int  # 1-based position in the conversation's transcript
    offset: str  # e.g. "00:00:33" into the conversation
    text: str
    speaker: str | None
    result: ChatsightResult | None
    error: str | None = None  # why the result could not be read, if it could not


@dataclass(frozen=True, slots=True)
class Transcript:
    ready: bool  # the reply's first element: false while the provider is still working
    sentences: tuple[Sentence, ...]
    detail: str | None = None  # what the provider said when not ready

    @property
    def complete(self) -> bool:
        """Ready, and every sentence has its moderation result (or a reason it has none)."""
        return self.ready and all(s.result is not None or s.error for s in self.sentences)


def valid_author_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == AUTHOR_KEY_BYTES
    except ValueError:
        return False


def convo_id_problem(convo_id: str) -> str | None:
    """Why ``convo_id`` cannot be used, or ``None``. The provider asks only for at least 10
    characters, so spaces, '/', '#', accents or emoji are all fine (the fetch URL
    percent-encodes them; see :func:`fetch_path` and :func:`state_file_name`). Refused: control
    characters, which no one means in an id and which would garble log lines, and lone
    surrogates, which are not text at all."""
    if len(convo_id) < MIN_CONVO_ID:
        return f"expected at least {MIN_CONVO_ID} characters"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in convo_id):
        return "expected no control characters"
    return None


def fetch_path(convo_id: str) -> str:
    """``/stream/<convoId>`` with the id percent-encoded, so any id is one path segment."""
    return FETCH_PREFIX + urllib.parse.quote(convo_id, safe="")


def state_file_name(convo_id: str) -> str:
    """A file name (without suffix) for a conversation's kept author key and done marker: the
    id itself when it is letters, digits, '.', '_' and '-' only (10 to 128 of them), else
    ``convo+`` and its SHA-256, since an id may hold '/' or be too long for a file name."""
    if _FILE_SAFE_CONVO_ID.fullmatch(convo_id):
        return convo_id
    return _DIGEST_NAME_PREFIX + hashlib.sha256(convo_id.encode()).hexdigest()


def submit_request(url: str, author_key: str, convo_id: str, *, long_running: bool) -> bytes:
    return orjson.dumps({"url": url, "authorKey": author_key, "longRunning": long_running,
                         "convoId": convo_id})


def fetch_request(author_key: str) -> bytes:
    return orjson.dumps({"authorKey": author_key})


_SPEAKERS_LIST = re.compile(rb'"speakers"\s*:\s*\[')


def _outside_strings(data: bytes, start: int = 0) -> Iterator[tuple[int, int]]:
    """``(index, byte)`` of each byte from ``start`` that is not inside a JSON string; a
    string shows as its opening quote only."""
    in_string = escaped = False
    for i in range(start, len(data)):
        byte = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # the closing quote
                in_string = False
            continue
        in_string = byte == 0x22
        yield i, byte


def repair_speakers(data: bytes) -> bytes:
    """The document's ``"speakers": ["0": [...], "1": [...]]`` made an object, so the reply
    parses; any other text is returned unchanged."""
    match = _SPEAKERS_LIST.search(data)
    if match is None:
        return data
    opening = match.end() - 1
    depth, keyed = 0, False
    for i, byte in _outside_strings(data, opening):
        if byte in b"[{":
            depth += 1
        elif byte in b"]}":
            depth -= 1
            if depth == 0:
                if not keyed:
                    return data
                return data[:opening] + b"{" + data[opening + 1:i] + b"}" + data[i + 1:]
        elif byte == 0x3A and depth == 1:  # a colon: "key": value pairs in a list
            keyed = True
    return data


_VALUE_START = frozenset(b'{["-0123456789tfn')


def supply_commas(data: bytes) -> bytes:
    """A comma where a value follows ``}`` or ``]`` with none between (outside strings)."""
    missing: list[int] = []
    after_close = False
    for i, byte in _outside_strings(data):
        if byte in b" \t\r\n":
            continue
        if after_close and byte in _VALUE_START:
            missing.append(i)
        after_close = byte in b"}]"
    if not missing:
        return data
    pieces = [data[a:b] for a, b in zip([0, *missing], [*missing, len(data)], strict=True)]
    return b",".join(pieces)


def parse_transcript(data: bytes) -> Transcript:
    """A fetch reply; :class:`ProtocolError` when it is not one."""
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            reply = orjson.loads(supply_commas(repair_speakers(data)))
        except orjson.JSONDecodeError:
            raise ProtocolError("reply is not JSON") from None
    if isinstance(reply, dict):  # an error envelope: {"success": false, "response": "..."}
        return Transcript(False, (), str(reply.get("response", reply))[:200])
    if not isinstance(reply, list) or not reply:
        raise ProtocolError("reply is not the documented [ready, result, error] list")
    detail = next((str(x)[:200] for x in reply[2:3] if x is not None), None)
    if reply[0] is not True:
        return Transcript(False, (), detail)
    body = reply[1] if len(reply) > 1 else None
    if not isinstance(body, dict):
        raise ProtocolError("reply has no transcript object")
    transcript = body.get("transcript")
    if not isinstance(transcript, dict):
        raise ProtocolError("reply has no transcript")
    master = _lines(transcript.get("master"))
    speakers = _speaker_of(transcript.get("speakers"))
    results = _results_by_text(body.get("moderationResults"))
    sentences = []
    for order, (offset, text) in enumerate(master, start=1):
        waiting = results.get(text)
        result, error = waiting.popleft() if waiting else (None, None)
        sentences.append(Sentence(order, offset, text, speakers.get((offset, text)), result,
                                  error))
    return Transcript(True, tuple(sentences), detail)


def _lines(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return []
    return [(str(item[0]), item[1]) for item in value
            if isinstance(item, list) and len(item) >= 2 and isinstance(item[1], str)]


def _speaker_of(value: Any) -> dict[tuple[str, str], str]:
    if isinstance(value, dict):
        groups = list(value.items())
    elif isinstance(value, list):
        groups = [(str(i), lines) for i, lines in enumerate(value)]
    else:
        return {}
    return {line: str(speaker) for speaker, lines in groups for line in _lines(lines)}


def _results_by_text(value: Any) -> dict[str, deque[tuple[ChatsightResult | None, str | None]]]:
    """Each sentence's results in order (a sentence said twice has two)."""
    by_text: dict[str, deque[tuple[ChatsightResult | None, str | None]]] = defaultdict(deque)
    if not isinstance(value, list):
        return by_text
    items = [item for item in value if isinstance(item, dict)
             and isinstance(item.get("voiceSTT"), str)]
    items.sort(key=lambda item: _order(item.get("messageOrder")))
    for item in items:
        by_text[item["voiceSTT"]].append(_result(item))
    return by_text


def _order(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else float("inf")


def _result(item: dict[str, Any]) -> tuple[ChatsightResult | None, str | None]:
    outer = item.get("response")
    if item.get("success") is False or not isinstance(outer, dict):
        return None, f"no result: {str(outer)[:100]}"
    inner = outer.get("response") if "response" in outer else outer
    if outer.get("success") is False:
        return None, f"no result: {str(inner)[:100]}"
    try:
        return parse_result(inner), None
    except ProtocolError as exc:
        return None, str(exc)
