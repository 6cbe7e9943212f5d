from __future__ import annotations

import logging

import pytest
import trio

from chatmod.plugins.log_sink import LogConfig, LogSink
from chatmod.review.model import OVERTURNED, Review, ReviewItem


async def test_a_review_record_is_an_info_review_line_not_an_alert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    item = ReviewItem("rv-7", 1764129600.0, {
        "id": "m-42", "source": "irc", "channel": "#kids", "author": "al\x1b[2J",
        "action": "delete", "verdict": "delete", "engine": "local", "text": "secret words"})
    record = Review(item, OVERTURNED, "ana", "a joke", 1764129700.0, None).record()
    sink = LogSink("log", LogConfig())
    caplog.set_level(logging.DEBUG, logger="chatmod.decisions")
    with trio.fail_after(5):
        await sink.write_alert(record)
    [logged] = caplog.records
    assert logged.levelno == logging.INFO
    line = logged.getMessage()
    assert line.startswith("REVIEW by=ana outcome=overturned review_id=rv-7 message_id=m-42 ")
    assert "#kids" in line
    assert "lift=True" in line
    assert "\x1b" not in line
    assert "secret words" not in line
    assert "ALERT" not in line


async def test_an_alert_record_is_still_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink("log", LogConfig())
    caplog.set_level(logging.DEBUG, logger="chatmod.decisions")
    with trio.fail_after(5):
        await sink.write_alert({"type": "alert", "keyword": "raid", "channel": "#kids"})
    [logged] = caplog.records
    assert logged.levelno == logging.WARNING
    assert logged.getMessage().startswith("ALERT keyword=raid")
