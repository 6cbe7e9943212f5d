"""Payloads and parsing, tested synchronously with the documents' own samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from chatmod.chatsight.protocol import (
    MAX_METADATA_KEYS,
    http_request,
    parse_http_reply,
    parse_ws_reply,
    trim_metadata,
    ws_request,
)
from chatmod.errors import ProtocolError

# The moderation result from the provider's voice document (its fullest sample).
DOC_REPLY = (Path(__file__).parent / "data" / "chatsight_http_reply.json").read_bytes()


def doc_reply() -> dict[str, Any]:
    reply: dict[str, Any] = orjson.loads(DOC_REPLY)
    return reply


def with_reference(reply: dict[str, Any], reference: object) -> bytes:
    reply["response"]["metadata"]["self_reference"] = reference
    return orjson.dumps(reply)


def test_requests_match_the_documented_payloads() -> None:
    assert orjson.loads(ws_request("hello world", "comment-1234")) == {
        "sample": "hello world", "reference": "comment-1234"}
    assert orjson.loads(http_request("Is the pizza ready?", {"someRoomID": "abcdd"})) == {
        "sample": "Is the pizza ready?", "metadata": {"someRoomID": "abcdd"}}


def test_metadata_is_trimmed_to_20_keys_deterministically() -> None:
    metadata = {f"k{i:02d}": i for i in range(25)}
    reversed_order = dict(reversed(list(metadata.items())))
    trimmed, dropped = trim_metadata(metadata)
    assert dropped
    assert len(trimmed) == MAX_METADATA_KEYS
    assert trimmed == trim_metadata(reversed_order)[0]
    assert sorted(trimmed) == [f"k{i:02d}" for i in range(20)]
    assert trim_metadata({"a": 1}) == ({"a": 1}, False)


def test_documented_reply_parses() -> None:
    result = parse_http_reply(DOC_REPLY)
    assert result.action == "pass"
    assert result.score == pytest.approx(1.6247108589523749)
    assert result.scores["engine1"]["baseline"] == pytest.approx(0.9972103238105774)
    # engine2.baseline is the text "Not required in engine2": left out of the numbers.
    assert "baseline" not in result.scores["engine2"]
    assert result.scores["engine2"]["vulgar"] == pytest.approx(0.0100000001)
    assert "engine3" not in result.scores


def test_ws_reply_carries_the_reference() -> None:
    reply = parse_ws_reply(with_reference(doc_reply(), "comment-1234"))
    assert reply.reference == "comment-1234"
    assert reply.result is not None
    assert reply.result.action == "pass"
    assert parse_ws_reply(with_reference(doc_reply(), 77)).reference == "77"


def test_tolerates_strings_for_numbers_unknown_actions_engine3_and_extra_keys() -> None:
    reply = doc_reply()
    response = reply["response"]
    response["suggestedAction"] = ["Quarantine", "0.93"]
    response["engine1"]["baseline"] = "0.5"
    response["engine3"] = {"invoked": False}
    response["operator"] = {}
    response["somethingNew"] = [1, 2, 3]
    reply["extra"] = True
    result = parse_http_reply(orjson.dumps(reply))
    assert (result.action, result.score) == ("Quarantine", 0.93)  # unknown: kept as is
    assert result.scores["engine1"]["baseline"] == 0.5
    assert "engine3" not in result.scores  # {"invoked": false} holds no number


@pytest.mark.parametrize(
    ("sent", "read"),
    [("Quarantine", "Quarantine"), (" review-later ", " review-later "), ("FLAG", "flag"),
     (" Delete", "delete"), ("pass", "pass"), ("", "")])
def test_unknown_actions_are_kept_as_is_known_ones_normalised(sent: str, read: str) -> None:
    reply = doc_reply()
    reply["response"]["suggestedAction"] = [sent, 0.5]
    assert parse_http_reply(orjson.dumps(reply)).action == read
    assert parse_ws_reply(with_reference(reply, "r-1")).result == parse_http_reply(
        orjson.dumps(reply))


@pytest.mark.parametrize(
    "action_field", [["delete"], "delete", ["delete", None], ["delete", "n/a"],
                     ["delete", "NaN"], ["delete", "-Infinity"], ["delete", "1e999"]])
def test_suggested_action_in_odd_shapes(action_field: object) -> None:
    reply = doc_reply()
    reply["response"]["suggestedAction"] = action_field
    result = parse_http_reply(orjson.dumps(reply))
    assert result.action == "delete"
    assert result.score is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"success": true, "response": {"engine1": {}}}', "no suggestedAction"),
        (b'{"success": true, "response": "text"}', "not an object"),
    ],
)
def test_garbage_is_a_reply_error(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_ws_reply(data)
    with pytest.raises(ProtocolError, match=error):
        parse_http_reply(data)


def test_failed_replies() -> None:
    failed = b'{"api": "chatsight-lang-text", "success": false, "response": "bad sample"}'
    with pytest.raises(ProtocolError, match="success: false"):
        parse_http_reply(failed)
    reply = parse_ws_reply(failed)
    assert reply.result is None
    assert reply.error == "bad sample"
    # A reply with a reference but no usable result fails only that reference.
    broken = doc_reply()
    del broken["response"]["suggestedAction"]
    reply = parse_ws_reply(with_reference(broken, "r-1"))
    assert (reply.reference, reply.result) == ("r-1", None)


def test_retry_after_as_seconds_or_http_date() -> None:
    from datetime import UTC, datetime
    from email.utils import format_datetime

    from chatmod.chatsight.http import retry_after_seconds

    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 7, UTC), usegmt=True)
    assert retry_after_seconds(date, now=now) == pytest.approx(7.0)
    assert retry_after_seconds(format_datetime(datetime.fromtimestamp(now - 9, UTC),
                                               usegmt=True), now=now) == 0.0
