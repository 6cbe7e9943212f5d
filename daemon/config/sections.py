"""The daemon's own config sections (``[daemon]``, ``[engine]``, ``[cache]``, ``[policy]``,
``[http]``, ``[dead_letters]``) and their constants: plain data on the schema, imported by
the components they configure and by the loader. Plugins keep their own ``Config``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from chatmod.config.problems import Problems
from chatmod.config.schema import Secret, setting
from chatmod.policy.ladder import parse_step

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

LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


@dataclass(frozen=True)
class DaemonSection:
    """The daemon itself."""

    drain_timeout: float = setting(
        10.0, min=0, help="seconds to finish in-flight messages after SIGTERM/SIGINT"
    )
    concurrency: int = setting(
        256, min=1, max=100_000, help="messages being moderated at once (the in-flight window)"
    )
    queue_size: int = setting(
        256, min=1, max=1_000_000,
        help="messages (and decisions) waiting between stages before sources block",
    )
    log_level: LogLevel = setting("info", help="least severe log lines shown (`chatmod run "
                                               "--log-level` overrides it)")
    log_format: Literal["text", "json"] = setting(
        "text", help="json: one JSON object per log line (ts, level, logger, message). Under "
                     "systemd (stderr is the journal) each line starts with its syslog "
                     "priority (`<3>` .. `<7>`), so journald records levels")
    stats_interval: float = setting(
        300.0, min=0, help="seconds between summary log lines; 0 turns them off (a summary is "
                           "always logged at exit)"
    )
    state_dir: str = setting("", help="where the per-minute stats (stats.sqlite3), voice author "
                                      "keys and the webhook secret are kept; default: "
                                      "$STATE_DIRECTORY (systemd's StateDirectory=); unset: "
                                      "stats in memory only. Plugins with a state_dir option "
                                      "of their own use this one unless set")


@dataclass(frozen=True)
class EngineSection:
    """The engine chain: the primary engine, then the fallbacks when it fails."""

    primary: str = setting("local", nonempty=True, help="the engine asked first: a name from "
                                                        "`[engines.<name>]` or an installed engine")
    fallback: tuple[str, ...] = setting(
        (FAIL_CLOSED,), one_or_many=True,
        help="engines asked in turn when the one before fails, optionally ending in 'pass' "
             "(fail open) or 'flag' (fail closed); if every engine fails and no final answer "
             "is given, the message is flagged",
    )
    timeout: float = setting(
        10.0, min=0.001,
        help="seconds an engine may take for one message before the next in the chain is "
             "asked (engines that bound their own time, like chatsight, are not cut short)")


@dataclass(frozen=True)
class CacheSection:
    """Verdicts reused for identical text. Only the primary engine's own verdicts are cached,
    never a fallback's, and never the wordlist engine's (asking it costs less than the cache)."""

    enabled: bool = setting(
        True, help="reuse verdicts for identical text (case and runs of whitespace ignored), "
                   "and send one request for identical texts moderated at the same time; "
                   "route = \"cache\"")
    ttl: float = setting(300.0, min=0.0, help="seconds a verdict is reused for the same text")
    size: int = setting(10_000, min=1, max=10_000_000,
                        help="texts remembered at most (least recently used dropped first)")


# Seconds strikes count for unless a ladder says otherwise: a day.
DEFAULT_STRIKE_WINDOW = 86400.0
DEFAULT_STRIKE_WEIGHTS = {"delete": 1}
# The longest window: ten years. Bounded so ``inf`` (TOML allows it) cannot pass the config
# and then fail every strike (a reason cannot format it, Redis cannot expire a key by it).
MAX_STRIKE_WINDOW = 10 * 366 * 86400.0
# The most strikes one verdict counts for: a sum of huge weights overflows SQLite's integers.
MAX_STRIKE_WEIGHT = 1000


@dataclass(frozen=True)
class LadderSection:
    """An escalation ladder: each strike an author earns in a channel within `window` takes the
    next step; past the last step, the last again. A verdict counts as `strikes` says (by
    default a delete counts 1, a flag nothing). The step is added to the decision line
    (`strikes`, `step`, `duration`, `reason`) beside the action; sinks that act (irc) apply
    it. A message delivered again (same id) adds no strike and its step is not taken twice."""

    steps: tuple[str, ...] = setting(
        (), help="steps in order: `warn`, `timeout <duration>` (30s, 10m, 2h, 1d), `kick`, "
                 "`ban`; empty: no ladder")
    window: float = setting(DEFAULT_STRIKE_WINDOW, min=1.0, max=MAX_STRIKE_WINDOW,
                            help="seconds a strike counts for")
    strikes: dict[str, int] = setting(DEFAULT_STRIKE_WEIGHTS,
                                      help="verdict -> strikes it counts for (others: 0)")

    def __post_init__(self) -> None:
        # Every bad step and weight at once: a ladder with three typos takes one run to fix.
        problems = Problems()
        for i, step in enumerate(self.steps):
            try:
                parse_step(step)
            except ValueError as exc:
                problems.add(f"steps[{i}]", str(exc))
        for verdict, weight in self.strikes.items():
            if not 0 <= weight <= MAX_STRIKE_WEIGHT:
                problems.add(f"strikes.{verdict}", f"expected 0 to {MAX_STRIKE_WEIGHT} strikes, "
                                                   f"found {weight}")
        problems.raise_if_any()


FailMode = Literal["chain", "open", "closed"]


@dataclass(frozen=True)
class ChannelPolicy:
    """One channel's overrides, e.g. `[policy.channels."#kids"]`."""

    actions: dict[str, str] = setting({}, help="verdict -> action, merged over [policy] actions")
    shadow: bool | None = setting(None, help="default: [policy] shadow")
    exempt_authors: tuple[str, ...] = setting((), help="added to [policy] exempt_authors")
    ladder: LadderSection | None = setting(None, help="this channel's own ladder (its strikes "
                                                      "are counted apart); default: [policy] "
                                                      "ladder")
    flag_score: float | None = setting(None, min=0.0, help="default: [policy] flag_score")
    delete_score: float | None = setting(None, min=0.0, help="default: [policy] delete_score")
    fail_mode: FailMode | None = setting(None, help="default: [policy] fail_mode")


# The last four are the answers of Chatsight's username check, asked when someone joins.
DEFAULT_ACTIONS = {"pass": "none", "flag": "flag", "delete": "delete", "reject": "kick",
                   "allow": "none", "undecided": "none", "error": "none"}


@dataclass(frozen=True)
class PolicySection:
    """What each verdict does."""

    actions: dict[str, str] = setting(DEFAULT_ACTIONS, help="verdict -> action, merged over the "
                                                            "default")
    unknown_verdict_action: str = setting(
        "flag", nonempty=True, help="action for a verdict string the table does not name")
    shadow: bool = setting(False, help="decide and record, take no action")
    exempt_authors: tuple[str, ...] = setting(
        (), help="authors whose messages always get action none (\"exempt\": true)")
    channels: dict[str, ChannelPolicy] = setting({}, help="per-channel overrides, by channel "
                                                          "name")
    ladder: LadderSection = setting(LadderSection(), help="the default escalation ladder")
    flag_score: float | None = setting(
        None, min=0.0, help="score cut-off: a verdict with a score at or above it is at least "
                            "`flag`; a `flag` below it is `pass` (the engine's verdict stays "
                            "in the line, the action follows the cut-off); unset: the engine's")
    delete_score: float | None = setting(
        None, min=0.0, help="score cut-off: at or above it `delete`; a `delete` below it is "
                            "`flag`; unset: the engine's")
    fail_mode: FailMode = setting(
        "chain", help="when no engine answered: `open` (action as for `pass`), `closed` (as for "
                      "`flag`), `chain`: the [engine] fallback's last word")


@dataclass(frozen=True)
class StateSection:
    """Where strikes are kept. `sqlite`: `state.sqlite3` under `[daemon] state_dir`, for one
    daemon (kept across restarts). `redis`: shared by every daemon of a consumer group,
    updated atomically (one Lua script per strike) with keys that expire with the window.
    `memory`: lost at exit. `auto`: sqlite when a state directory is set, else memory."""

    backend: Literal["auto", "memory", "sqlite", "redis"] = setting(
        "auto", help="the store for strikes")
    host: str = setting("127.0.0.1", nonempty=True, help="redis: the server")
    port: int = setting(6379, min=1, max=65535, help="redis: its port")
    db: int = setting(0, min=0, help="redis: the database number")
    password: Secret | None = setting(None, help="redis: its password")
    key_prefix: str = setting("chatmod:", help="redis: prefix of every key the store writes")
    control: bool = setting(False, help="serve live control (`chatmod exempt`, `chatmod "
                                        "channel`) on `<state_dir>/control.sock` (0600), with a "
                                        "token in `<state_dir>/control.token` (0600); needs "
                                        "state_dir")
    refresh: float = setting(1.0, min=0.05, help="seconds between reads of the live rules "
                                                 "(exemptions, channel switches) from the store: "
                                                 "how soon another daemon's change applies here")


@dataclass(frozen=True)
class HttpSection:
    """The daemon's HTTP server: health, readiness, metrics, its own statistics and Chatsight's
    keyword alerts. Keyword alerts arrive at `POST /webhooks/chatsight` and are checked
    strictly: `time` an integer, `hmac` the canonical base64 of HMAC-SHA256(secret, `str(time)`)
    compared in constant time, `time` within `webhook_window`, the same body not seen before
    within the window (replays refused), the body within `max_body`. Malformed bodies get 400,
    unauthentic or stale ones 401, oversized ones 413, never a 5xx. A verified alert goes to
    every sink: a
    `{"type": "alert", "keyword", "metadata", "text", ...}` line in jsonl files, a warning line
    in the log, a NOTICE in the `irc` sink's `alerts_channel`. Chatsight signs only the
    timestamp, not the body, so the alerts for one message (one per matching keyword) share one
    signature: a replay is the same body again, not the same signature (bodies are remembered
    as digests, for the window and across reloads, 100,000 at most). Someone who captured one
    alert could send a different body with the same signature until the window closes: that is
    why the window is short. Treat alert contents as hints, not as proof.

    `HEAD` is answered on every route as `GET` without the body. Nothing a client sends stops
    the daemon: a failing connection is closed and logged, refusals and evictions are logged at
    most once every 10 s per kind, and on stop the responses under way get 3 s to finish."""

    enabled: bool = setting(
        False, help="serve GET /healthz (alive), GET /readyz (200 once sources, engines and "
                    "sinks have started and no component is down, else 503), GET /metrics "
                    "(Prometheus text, see Metrics) and the "
                    "daemon's own counts at GET /stats/moderation and POST "
                    "/stats/moderation/search")
    host: str = setting("127.0.0.1", nonempty=True, help="address to listen on (loopback "
                                                          "unless you mean otherwise)")
    port: int = setting(9177, min=0, max=65535, help="port to listen on; 0: any free port")
    max_body: int = setting(65536, min=0, help="largest request body accepted (bytes)")
    max_connections: int = setting(HTTP_MAX_CONNECTIONS, min=1, help="connections held at "
                                   "once; at the limit the one idle longest is closed")
    header_timeout: float = setting(HTTP_HEADER_TIMEOUT, min=0.1, help="seconds a request "
                                    "head has to arrive whole")
    body_timeout: float = setting(HTTP_BODY_TIMEOUT, min=0.1, help="seconds a request body "
                                  "has to arrive whole")
    keep_alive_timeout: float = setting(HTTP_KEEP_ALIVE_TIMEOUT, min=0.1, help="seconds an "
                                        "idle keep-alive connection stays open")
    chatsight_webhook_secret: Secret | None = setting(
        None, help="Chatsight's add-on shared secret; when set, POST /webhooks/chatsight receives "
                   "keyword alerts")
    webhook_window: float = setting(WEBHOOK_WINDOW, min=1.0, help="seconds a keyword alert's "
                                                                 "timestamp may be off")


@dataclass(frozen=True)
class DeadLettersSection:
    """Decisions a sink gave up on. A decision written here counts as taken, so its source is
    acknowledged; if even this file cannot be written, the message is not acknowledged and a
    durable source (Redis) delivers it again. Nothing is dropped silently."""

    path: str = setting("dead-letters.jsonl", nonempty=True,
                        help="JSON-lines file (appended) for decisions a sink gave up on")
    include_text: bool = setting(True, help="keep the message text in dead letters")


# A week: long enough for a raid's copies to come back, short enough that a reviewer's
# "this was fine" does not outlive the context it was given in.
REVIEW_ALLOW_TTL = 7 * 24 * 3600.0
ReviewBackend = Literal["sqlite", "redis"]


@dataclass(frozen=True)
class ReviewSection:
    """The review queue (`chatmod review`): decisions whose action is in `actions` wait for a
    person to approve or overturn them. An overturn puts the exact text (normalised as the
    verdict cache normalises it) on an allow-list, consulted before any engine (route
    `allow`, engine `allow-list`, verdict `pass`) until `allow_ttl` runs out, and a
    `{"type": "review", ...}` record goes to the sinks (from one daemon of a group) so a
    platform can lift the action. Every review is written to the audit log."""

    enabled: bool = setting(False, help="queue decisions for review")
    actions: tuple[str, ...] = setting(("flag",), one_or_many=True,
                                       help="the policy actions that are queued")
    backend: ReviewBackend = setting(
        "sqlite", help="sqlite: `<state_dir>/review.sqlite3` (one daemon; needs a state "
                       "directory); redis: streams shared by every daemon of a group")
    allow_ttl: float = setting(REVIEW_ALLOW_TTL, min=1.0, help="seconds an overturned text "
                                                                "stays on the allow-list")
    redis_host: str = setting("127.0.0.1", nonempty=True, help="redis backend: the server")
    redis_port: int = setting(6379, min=1, max=65535, help="redis backend: its port")
    redis_db: int = setting(0, min=0, help="redis backend: the database number")
    redis_password: Secret | None = setting(None, help="redis backend: its password")
    redis_key: str = setting("chatmod:review", nonempty=True,
                             help="redis backend: the queue stream; reviews go to "
                                  "`<redis_key>:reviews`")
    redis_group: str = setting("chatmod", nonempty=True, help="redis backend: the group whose "
                               "daemons share the queue (one of them writes each review record)")
    redis_consumer: str = setting("", help="redis backend: this daemon's name in the group; "
                                           "default host-pid")
