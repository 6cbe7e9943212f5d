"""Chatsight text moderation: request payloads and reply parsing. No I/O here.

Facts from the provider's documents (kept here so the project does not depend on them):

- Websocket ``wss://api.chatsight.ai:443/text/moderation``, header ``x-chatsight-api-auth``,
  the reference client asks for the subprotocol ``echo-protocol``. Request
  ``{"sample": "<text>", "reference": "<id>"}``; replies come in any order and carry the
  reference at ``response.metadata.self_reference``. An auth failure is the connection being
  cut right after it opens; the server sends no FIN packets.
- HTTP fallback ``POST /text/moderation`` with ``{"sample": "<text>"}``; the reply has the
  same shape: ``{"api": "chatsight-lang-text", "success": true, "response": {...}}``.
- ``response`` holds ``engine1`` / ``engine2`` (scores, but ``engine2.baseline`` may be a text
  such as "Not required in engine2"), sometimes ``engine3: {"invoked": false}``,
  ``suggestedAction: [<action>, <score>]`` (``pass``; ``flag`` and ``delete`` are implied by the
  stats counters; any other string is kept as is), ``patches``, ``insights``, ``metadata``.
  Numbers sometimes arrive as strings.
- ``metadata`` on a request may hold at most 20 keys: with more, the keyword add-on silently
  does not run (the request itself still works).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from chatmod.errors import ProtocolError
from chatmod.protocols.replies import as_number, json_object

AUTH_HEADER = "x-chatsight-api-auth"
SUBPROTOCOL = "echo-protocol"
TEXT_MODERATION_PATH = "/text/moderation"
# Username moderation (beta): POST {"username": ...}; reply response.usernameCheck.
USERNAME_PATH = "/text/moderation/username"
USERNAME_ANSWERS = ("allow", "reject", "undecided", "error")
MAX_METADATA_KEYS = 20
SCORE_GROUPS = ("engine1", "engine2", "engine3")
# The actions the policy knows by name; their spelling is normalised, any other is kept as is.
KNOWN_ACTIONS = frozenset({"pass", "flag", "delete"})
# Distinct texts found among the scores whose reading as a number is remembered, and the
# longest remembered (a longer one is read each time: the memory stays small).
TEXT_NUMBERS_REMEMBERED = 256
TEXT_NUMBER_MAX_LENGTH = 64


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which tripled
# the cost of making these two, once per reply; nothing changes them after parsing.
@dataclass(slots=True)
class ChatsightResult:
    """A moderation result: the suggested action, its score and the engines' numbers."""

    action: str
    score: float | None
    scores: Mapping[str, Any]


@dataclass(slots=True)
class Reply:
    """One websocket reply: the reference it answers and its result (or why it failed)."""

    reference: str | None
    result: ChatsightResult | None
    error: str | None = None


def trim_metadata(
    metadata: Mapping[str, Any], limit: int = MAX_METADATA_KEYS
) -> tuple[dict[str, Any], bool]:
    """At most ``limit`` keys (the first ones in sorted order), and whether any were dropped.
    Sorting makes the choice the same whatever order the keys came in."""
    if len(metadata) <= limit:
        return dict(metadata), False
    kept = sorted(metadata, key=str)[:limit]
    return {key: metadata[key] for key in kept}, True


def ws_request(text: str, reference: str, metadata: Mapping[str, Any] | None = None) -> bytes:
    """A websocket moderation request. ``metadata`` must already be trimmed."""
    if metadata:  # the usual request (chatmod's context): one dict, built whole
        return orjson.dumps({"sample": text, "reference": reference, "metadata": metadata})
    return orjson.dumps({"sample": text, "reference": reference})


def http_request(text: str, metadata: Mapping[str, Any] | None = None) -> bytes:
    """An HTTP moderation request body. ``metadata`` must already be trimmed."""
    payload: dict[str, Any] = {"sample": text}
    if metadata:
        payload["metadata"] = metadata
    return orjson.dumps(payload)


def parse_result(response: Any) -> ChatsightResult:
    """The moderation result inside a reply's ``response`` object."""
    if not isinstance(response, dict):
        raise ProtocolError(f"'response' is {type(response).__name__}, not an object")
    suggested = response.get("suggestedAction")
    if isinstance(suggested, str):
        action, raw_score = suggested, None
    elif isinstance(suggested, list) and suggested and isinstance(suggested[0], str):
        action = suggested[0]
        raw_score = suggested[1] if len(suggested) > 1 else None
    else:
        raise ProtocolError("no suggestedAction in the reply")
    scores: dict[str, Any] = {}
    for group in SCORE_GROUPS:
        values = response.get(group)
        if isinstance(values, dict) and values:
            numbers = _numbers(values)
            if numbers:
                scores[group] = numbers
    # The usual score is a finite float: kept without a call.
    finite = type(raw_score) is float and raw_score - raw_score == 0.0
    score = raw_score if finite else as_number(raw_score)
    return ChatsightResult(
        action if action in KNOWN_ACTIONS else action_name(action), score, scores)


def _numbers(values: dict[Any, Any]) -> dict[Any, float]:
    """The finite numbers among ``values`` (numeric strings read as numbers), in order."""
    # One type test per value, and a call only for a text (remembered) or an odd type: the
    # fastest form measured on Chatsight's reply shape (a group of floats, one with a text,
    # one with a boolean). Returning a group of floats uncopied measured no faster: proving
    # it needs the same pass over the values.
    numbers: dict[Any, float] = {}
    for key, value in values.items():
        kind = type(value)
        if kind is float:
            if value - value == 0.0:  # finite (NaN or infinity give NaN)
                numbers[key] = value
            continue
        if kind is bool or value is None:
            continue
        number = (_text_number(value) if kind is str and len(value) <= TEXT_NUMBER_MAX_LENGTH
                  else as_number(value))
        if number is not None:
            numbers[key] = number
    return numbers


@functools.lru_cache(maxsize=TEXT_NUMBERS_REMEMBERED)
def _text_number(text: str) -> float | None:
    """:func:`as_number` of a text, remembered: a text among the scores is nearly always the
    same few sentences (engine2's "Not required in engine2"), and float() failing on one
    raises, the costliest step of reading a reply."""
    return as_number(text)


def action_name(action: str) -> str:
    """A known action in its usual spelling (``"Delete "`` is ``delete``); any other string
    exactly as Chatsight sent it, so the decision shows what was said and the policy's
    ``unknown_verdict_action`` applies."""
    folded = action.strip().lower()
    return folded if folded in KNOWN_ACTIONS else action


# The parts of a reply (websocket or HTTP) the usual one is read by, typed for msgspec,
# which builds these and skips the rest of the reply (patches, insights, the other metadata)
# unbuilt. A score group's values are typed: a reply whose group holds an object or an
# array, or any other shape these types refuse, is read whole by orjson instead. Not tracked
# by the garbage collector: they hold no cycles.
_GroupValues = dict[str, float | str | bool | None] | None


class _ReplyMetadata(msgspec.Struct, gc=False):
    self_reference: Any = None


class _ReplyResponse(msgspec.Struct, gc=False, rename={"suggested": "suggestedAction"}):
    suggested: Any = None
    metadata: _ReplyMetadata | None = None
    engine1: _GroupValues = None
    engine2: _GroupValues = None
    engine3: _GroupValues = None


class _ReplyEnvelope(msgspec.Struct, gc=False):
    success: Any = None
    response: _ReplyResponse | None = None


_decode_usual_reply = msgspec.json.Decoder(_ReplyEnvelope).decode


#: A reply's answer: its reference, action, score and scores (the usual reply's: no objects made).
UsualAnswer = tuple[str, str, float | None, Mapping[str, Any]]


def parse_ws_reply(data: bytes | str) -> Reply:
    """A websocket reply. :class:`ProtocolError` when it is not a reply at all.

    The usual reply (a reference of ours, ``["<action>", <float>]``) is read with msgspec
    into the few parts a decision needs; any other reply is read whole by orjson, as
    :func:`parse_result` reads an HTTP one. Both read the usual reply the same way. One
    difference (tests/test_chatsight_ws_fastpath.py): a number beyond a double's range in a
    part chatmod does not read (e.g. ``patches``) no longer voids the reply; orjson refuses
    the whole document for it.
    """
    read = read_ws_reply(data)
    if isinstance(read, Reply):
        return read
    reference, action, score, scores = read
    return Reply(reference, ChatsightResult(action, score, scores))


def read_ws_reply(data: bytes | str) -> UsualAnswer | Reply:
    """:func:`parse_ws_reply`, the usual reply's answer as a tuple (the socket's reader
    takes it apart: no reply and result objects made, once per message)."""
    usual = _usual_reply(data)
    if usual is not None:
        response, action, score = usual
        metadata = response.metadata
        if metadata is not None and type(reference := metadata.self_reference) is str:
            return reference, action, score, _typed_scores(response)
    return _ws_reply(_loads(data))


def _usual_reply(data: bytes | str) -> tuple[_ReplyResponse, str, float] | None:
    """The usual reply's response, action (its usual spelling) and score, read by msgspec
    (:func:`parse_ws_reply` says how); None for any other reply, read whole by orjson."""
    if not isinstance(data, str) and not data.isascii():
        # msgspec checks UTF-8 only in the texts it builds (a skipped one may be anything,
        # and a built one raises UnicodeDecodeError); orjson refuses the whole document.
        # ASCII (nearly every reply) is UTF-8: read as it is, without the copy.
        try:
            data = data.decode()
        except UnicodeDecodeError:
            return None
    try:
        envelope = _decode_usual_reply(data)
    # Not JSON, not the usual shape, a text no UTF-8 can spell (a lone surrogate: not from
    # a websocket frame, which is UTF-8), or nested deeper than msgspec's recursion goes
    # from here (it skips an unread part by recursion, so how deep depends on the caller's
    # stack; orjson's limit is fixed, 1024).
    except (msgspec.MsgspecError, UnicodeEncodeError, RecursionError):
        return None
    response = envelope.response
    if response is None or envelope.success is False:
        return None
    suggested = response.suggested
    if type(suggested) is not list or len(suggested) != 2:
        return None
    action, score = suggested
    # msgspec's floats are finite (it refuses a number beyond a double's range).
    if type(action) is not str or type(score) is not float:
        return None
    return response, action if action in KNOWN_ACTIONS else action_name(action), score


def _loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError("reply is not JSON") from None


def _typed_scores(response: _ReplyResponse) -> dict[str, Any]:
    """The scores of a reply read by msgspec: :func:`parse_result`'s, with no test that a
    float is finite. A group at a time, spelled out (a loop over the three measured 0.3 µs
    a reply slower)."""
    scores: dict[str, Any] = {}
    values = response.engine1
    if values and (numbers := _typed_numbers(values)):
        scores["engine1"] = numbers
    values = response.engine2
    if values and (numbers := _typed_numbers(values)):
        scores["engine2"] = numbers
    values = response.engine3
    if values and (numbers := _typed_numbers(values)):
        scores["engine3"] = numbers
    return scores


def _typed_numbers(values: dict[str, float | str | bool | None]) -> dict[str, float]:
    """:func:`_numbers` of a group read by msgspec: each value a finite float (an integer
    already made one), a text, a boolean or None."""
    numbers: dict[str, float] = {}
    for key, value in values.items():
        if type(value) is float:
            numbers[key] = value
        elif type(value) is str:
            number = (_text_number(value) if len(value) <= TEXT_NUMBER_MAX_LENGTH
                      else as_number(value))
            if number is not None:
                numbers[key] = number
    return numbers


def _ws_reply(envelope: Any) -> Reply:
    """:func:`parse_ws_reply` of a parsed reply, whatever its shape."""
    if not isinstance(envelope, dict):
        raise ProtocolError(f"reply is {type(envelope).__name__}, not an object")
    response = envelope.get("response")
    reference = None
    if isinstance(response, dict):
        metadata = response.get("metadata")
        if isinstance(metadata, dict):
            raw = metadata.get("self_reference")
            if type(raw) is str:  # ours always are: no call
                reference = raw
            elif isinstance(raw, (str, int)) and not isinstance(raw, bool):
                reference = str(raw)
    if envelope.get("success") is False:
        detail = response if isinstance(response, str) else "success: false"
        return Reply(reference, None, str(detail)[:200])
    try:
        return Reply(reference, parse_result(response))
    except ProtocolError as exc:
        if reference is None:
            raise
        return Reply(reference, None, str(exc))


def parse_http_reply(data: bytes | str) -> ChatsightResult:
    """An HTTP moderation reply; :class:`ProtocolError` says what is wrong with it. The
    usual one is read as the websocket's is (:func:`parse_ws_reply`)."""
    usual = _usual_reply(data)
    if usual is not None:
        response, action, score = usual
        return ChatsightResult(action, score, _typed_scores(response))
    envelope = json_object(data, ProtocolError)
    if envelope.get("success") is False:
        detail = envelope.get("response")
        raise ProtocolError(f"Chatsight answered success: false ({str(detail)[:200]})")
    return parse_result(envelope.get("response"))


def username_request(name: str) -> bytes:
    """The body of a username check."""
    return orjson.dumps({"username": name})


def parse_username_reply(data: bytes | str) -> str:
    """``allow``, ``reject``, ``undecided`` or ``error``; :class:`ProtocolError` for anything
    else (an answer the beta API may add later included: it is not ours to guess)."""
    envelope = json_object(data, ProtocolError)
    if envelope.get("success") is False:
        detail = str(envelope.get("response"))[:200]
        raise ProtocolError(f"Chatsight answered success: false ({detail})")
    response = envelope.get("response")
    answer = response.get("usernameCheck") if isinstance(response, dict) else None
    if answer not in USERNAME_ANSWERS:
        raise ProtocolError(f"expected response.usernameCheck, one of "
                            f"{', '.join(USERNAME_ANSWERS)}, found {str(answer)[:40]!r}")
    return str(answer)
