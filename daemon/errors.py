"""chatmod's typed errors, translated from library errors at the edges.

    ChatmodError
    ├── ConfigError            bad config or usage: the CLI exits 2
    │   └── PluginError        a plugin is missing, duplicated or cannot load
    ├── EngineError            an engine could not give a verdict for a message
    │   └── EngineTimeout      ... within the time it was allowed
    ├── SinkError              a sink could not take a decision
    ├── InputError             a chat line could not be turned into a message (reported, skipped)
    └── ProtocolError          what a provider sent cannot be read: a Chatsight, Discuse or
                               voice reply, a keyword-alert webhook (each module its subclass)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatmod.model import Decision


class ChatmodError(Exception):
    """Base of every error chatmod raises on purpose."""


class ConfigError(ChatmodError):
    """The configuration (or the command line) is invalid.

    The message names the key path, the value found and what was expected.
    """


class PluginError(ConfigError):
    """A plugin is unknown, provided twice, or cannot be loaded."""


class EngineError(ChatmodError):
    """An engine failed to produce a verdict."""


class EngineTimeout(EngineError):
    """An engine did not answer within its deadline."""


class SinkError(ChatmodError):
    """A sink failed to take decisions: ``failed`` names them (None: the whole batch), and
    ``reasons``, when given, says why for each."""

    def __init__(
        self, message: str, failed: Sequence[Decision] | None = None,
        reasons: Sequence[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.failed = failed
        self.reasons = reasons


class InputError(ChatmodError):
    """A line of chat input is invalid; it is reported and skipped."""


class ProtocolError(ChatmodError, ValueError):
    """What a peer sent cannot be read; the message says why (never the bytes in full)."""
