from __future__ import annotations

import logging

import pytest

from chatmod.logsetup import RedactSecrets
from chatmod.schema import Secret


def test_log_records_are_scrubbed_of_secret_values(caplog: pytest.LogCaptureFixture) -> None:
    Secret("env TEST", "tok-very-secret-123")
    logger = logging.getLogger("chatmod.test.redact")
    logger.addFilter(RedactSecrets())
    try:
        with caplog.at_level(logging.INFO, logger="chatmod.test.redact"):
            logger.info("connecting with %s to %s", "tok-very-secret-123", "host")
    finally:
        logger.filters.clear()
    assert caplog.messages == ["connecting with *** to host"]
