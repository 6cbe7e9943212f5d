"""The daemon's own config sections (``[daemon]``, ``[engine]``, ``[cache]``, ``[policy]``,
``[http]``, ``[dead_letters]``) and their constants: plain data on the schema, imported by
the components they configure and by the loader. Plugins keep their own ``Config``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chatmod.config.schema import Secret, setting

# Seconds a Chatsight keyword alert's signed timestamp may be off (their documented window).
WEBHOOK_WINDOW = 60.0
# The embedded HTTP server. Connections: far below the usual 1024 file descriptors, which the
# daemon shares with its other parts. A head or body has 10 s to arrive whole. Keep-alive is
# longer than httpx's 5 s client-side expiry, so a pooled client drops an idle connection
# before we close it, never while it sends a request on it (that race loses the request).
HTTP_MAX_CONNECTIONS = 256
HTTP_HEADER_TIMEOUT = 10.0
HTTP_BODY_TIMEOUT = 10.0
HTTP_KEEP_ALIVE_TIMEOUT = 10.0

# Terminal answers of the engine chain: no engine is asked.
FAIL_OPEN = "pass"
FAIL_CLOSED = "flag"
TERMINAL_FALLBACKS = (FAIL_OPEN, FAIL_CLOSED)


@dataclass(frozen=True)
class DaemonSection:
    drain_timeout: float = setting(
        10.0, min=0, help="seconds to finish in-flight messages after SIGTERM/SIGINT"
    )
    concurrency: int = setting(
        256, min=1, max=100_000, help="messages being moderated at once (the in-flight window)"
    )
    queue_size: int = setting(
        256, min=1, max=1_000_000, help="messages waiting between stages before sources block"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = setting(
        "text", help="json: one JSON object per log line (ts, level, logger, message)")
    stats_interval: float = setting(
        300.0, min=0, help="seconds between summary log lines; 0 turns them off"
    )
    state_dir: str = setting("", help="where moderation stats, voice author keys and the "
                                      "webhook secret are kept (default: $STATE_DIRECTORY, "
                                      "set by systemd; unset: stats in memory only)")


@dataclass(frozen=True)
class EngineSection:
    primary: str = setting("local", nonempty=True)
    fallback: tuple[str, ...] = setting(
        (FAIL_CLOSED,), one_or_many=True,
        help="engines tried in turn when the primary fails, ending in 'pass' or 'flag'",
    )
    timeout: float = setting(10.0, min=0.001, help="seconds an engine may take for one message")


@dataclass(frozen=True)
class CacheSection:
    enabled: bool = True
    ttl: float = setting(300.0, min=0.0, help="seconds a verdict is reused for the same text")
    size: int = setting(10_000, min=1, max=10_000_000, help="texts remembered at most")


@dataclass(frozen=True)
class ChannelPolicy:
    actions: dict[str, str] = setting({})
    shadow: bool | None = None
    exempt_authors: tuple[str, ...] = ()


DEFAULT_ACTIONS = {"pass": "none", "flag": "flag", "delete": "delete"}


@dataclass(frozen=True)
class PolicySection:
    actions: dict[str, str] = setting(DEFAULT_ACTIONS)
    unknown_verdict_action: str = setting("flag", nonempty=True)
    shadow: bool = False
    exempt_authors: tuple[str, ...] = ()
    channels: dict[str, ChannelPolicy] = setting({})


@dataclass(frozen=True)
class HttpSection:
    enabled: bool = setting(False, help="serve /healthz, /readyz and /metrics")
    host: str = setting("127.0.0.1", nonempty=True, help="address to listen on (loopback "
                                                          "unless you mean otherwise)")
    port: int = setting(9177, min=0, max=65535)
    max_body: int = setting(65536, min=0, help="largest request body accepted (bytes)")
    max_connections: int = setting(HTTP_MAX_CONNECTIONS, min=1, help="connections held at "
                                   "once; at the limit the one idle longest is closed")
    header_timeout: float = setting(HTTP_HEADER_TIMEOUT, min=0.1, help="seconds a request "
                                    "head has to arrive whole")
    body_timeout: float = setting(HTTP_BODY_TIMEOUT, min=0.1, help="seconds a request body "
                                  "has to arrive whole")
    keep_alive_timeout: float = setting(HTTP_KEEP_ALIVE_TIMEOUT, min=0.1, help="seconds an "
                                        "idle keep-alive connection stays open")
    chatsight_webhook_secret: Secret | None = None
    webhook_window: float = setting(WEBHOOK_WINDOW, min=1.0, help="seconds a keyword alert's "
                                                                 "timestamp may be off")


@dataclass(frozen=True)
class DeadLettersSection:
    path: str = setting("dead-letters.jsonl", nonempty=True,
                        help="JSON-lines file (appended) for decisions a sink gave up on")
    include_text: bool = setting(True, help="keep the message text in dead letters")
