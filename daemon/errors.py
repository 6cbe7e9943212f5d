"""chatmod's typed errors, translated from library errors at the edges.

Every error chatmod raises on purpose is defined here (tests/test_error_tree.py checks that
no other module defines one):

    ChatmodError
    ├── ConfigError            bad config or usage: the CLI exits 2
    │   ├── PluginError        a plugin is missing, duplicated or cannot load
    │   └── UsageError         a command line the command cannot take
    ├── EngineError            an engine could not give a verdict for a message
    │   ├── EngineTimeout      ... within the time it was allowed
    │   ├── AuthRejected       ... because the provider refused the API key (HTTP 401/403)
    │   └── ExchangeFailed     ... because an HTTP request got no complete answer (the
    │       │                  connection failed or the answer is invalid)
    │       └── ExchangeTimedOut   ... within the request's timeout
    ├── AccountError           a call on a Chatsight account failed (``status``: the HTTP one)
    │   └── AccountAuthError   ... because the API key was refused
    ├── SinkError              a sink could not take a decision
    ├── InputError             a chat line could not be turned into a message (reported, skipped)
    │   └── IrcLineError       a line from the IRC server that cannot be read (skipped)
    ├── LabelledSetError       a labelled chat set (``chatmod eval``) cannot be read
    ├── IrcFatal               the IRC server refused us in a way a quick retry will not fix
    ├── ConnectionLost         a connection to a peer is gone or not open: nothing was sent
    │   │                      (``peer`` names it: the IRC server, Chatsight's websocket)
    │   └── HandshakeFailed    ... its opening handshake did not complete
    │       └── UpgradeRejected    the server answered the websocket upgrade with an HTTP
    │                              status (``status``; a 401/403 means a refused key)
    ├── ControlError           a live-control request (`chatmod exempt`, `chatmod channel`)
    │                          that cannot be carried out: refused with the reason
    ├── ReviewError            the review queue cannot do what was asked (no such item, store
    │                          unreachable)
    └── ProtocolError          what a peer sent cannot be read: a Chatsight, Discuse, voice or
        │                      stats reply, a stats search request (the message says why)
        └── WebhookRejected    a keyword-alert webhook refused, with the HTTP status to answer
                               (400 malformed, 401 not authentic)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatmod.core.model import Decision


class ChatmodError(Exception):
    """Base of every error chatmod raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in a config: the key path (``engines.local.flag_threshold``; ``""`` when
    the message names it itself) and what is wrong (the value found, what was expected)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(ChatmodError):
    """The configuration (or the command line) is invalid.

    It carries every problem found (``problems``), each naming the key path, the value found
    and what was expected; ``str()`` is one line per problem, each prefixed with ``origin``
    (the config file) when set.
    """

    def __init__(self, message: str = "", *, problems: Sequence[ConfigProblem] = (),
                 origin: str = "") -> None:
        self.problems: tuple[ConfigProblem, ...] = (
            tuple(problems) or (ConfigProblem("", message),))
        self.origin = origin
        super().__init__("\n".join(self.lines()))

    @classmethod
    def at(cls, path: str, message: str) -> ConfigError:
        """One problem at key ``path``."""
        return cls(problems=[ConfigProblem(path, message)])

    def lines(self) -> list[str]:
        """One line per problem, ``origin: key.path: what is wrong``."""
        prefix = f"{self.origin}: " if self.origin else ""
        return [prefix + str(problem) for problem in self.problems]

    def located(self, origin: str) -> ConfigError:
        """The same problems, said to be in ``origin`` (a file)."""
        return type(self)(problems=self.problems, origin=origin)

    @staticmethod
    def combine(errors: Sequence[ConfigError]) -> ConfigError:
        """All problems of ``errors`` in one error: a :class:`PluginError` when each of them
        is one (a plugin that cannot load), else a :class:`ConfigError`."""
        problems = [problem for error in errors for problem in error.problems]
        if all(isinstance(error, PluginError) for error in errors):
            return PluginError(problems=problems)
        return ConfigError(problems=problems)


class UsageError(ConfigError):
    """A command line the command cannot take (a missing file, an unreadable option): exit 2
    like a config error, and said to be a usage error, not a config error."""


class PluginError(ConfigError):
    """A plugin is unknown, provided twice, or cannot be loaded."""


class EngineError(ChatmodError):
    """An engine failed to produce a verdict."""


class EngineTimeout(EngineError):
    """An engine did not answer within its deadline."""


class AuthRejected(EngineError):
    """The API key was refused (HTTP 401/403). Retrying will not help."""


class ExchangeFailed(EngineError):
    """The request got no complete answer: the connection failed or the answer is invalid."""


class ExchangeTimedOut(ExchangeFailed):
    """No complete answer within the timeout."""


class AccountError(ChatmodError):
    """An account call failed; the message says which and why. ``status``: the HTTP status
    of the reply, when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AccountAuthError(AccountError):
    """The API key was refused."""


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


class IrcLineError(InputError):
    """A line from the IRC server cannot be read (no command, say); it is counted and skipped."""


class LabelledSetError(ChatmodError):
    """A labelled chat set cannot be read: ``line`` (1-based, 0 for the file itself) says
    where; ``chatmod eval`` exits 2."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line else reason)


class IrcFatal(ChatmodError):
    """The IRC server refused us in a way a quick reconnect will not fix (a refused password,
    SASL or nick, a certificate that fails verification): retried after a long wait."""


class ControlError(ChatmodError):
    """A control request is malformed, unauthorised or cannot be carried out."""


class ProtocolError(ChatmodError, ValueError):
    """What a peer sent cannot be read; the message says why (never the bytes in full).

    The reply and request parsers of every provider raise it (each message names what is
    wrong); callers translate it at their edge (an HTTP fallback, a 400, an account error).
    It is a ``ValueError`` too, as the parsers' errors were before they moved here."""


class WebhookRejected(ProtocolError):
    """Refused, with the HTTP status to answer (400 malformed, 401 not authentic)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ConnectionLost(ChatmodError):
    """The connection to ``peer`` is closed, or was never open: what was to be sent was not.

    ``str()`` is the ``reason`` alone (it is logged after the peer's name already).
    """

    def __init__(self, reason: str, *, peer: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.peer = peer


class HandshakeFailed(ConnectionLost):
    """The opening handshake of a connection did not complete."""


class UpgradeRejected(HandshakeFailed):
    """The server answered the websocket upgrade with an HTTP status (e.g. 401)."""

    def __init__(self, status: int, *, peer: str) -> None:
        super().__init__(f"upgrade refused with HTTP {status}", peer=peer)
        self.status = status


class ReviewError(ChatmodError):
    """The review queue cannot do what was asked: no such item, or its store is unreachable."""
