"""What a plugin is: the three kinds (source, sink, engine) and the calls the pipeline makes.

Each plugin class is generic over its config, a dataclass validated by
:mod:`chatmod.config.schema` from its TOML table: ``class JsonlSink(Sink[JsonlConfig])`` with
``Config = JsonlConfig``, built as ``cls(name, config)``, so ``self.config`` is a
``JsonlConfig`` to the type checker. Its long-running part is
``async def run(..., *, task_status)``, started with ``await nursery.start(plugin.run, ...)``;
it calls ``task_status.started()`` once ready. Optional hooks (``check_available``, ``bind``,
``reconfigure``, and each kind's own) are declared here with defaults that do nothing.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import trio

from chatmod.core.model import Decision, Message, Verdict
from chatmod.errors import EngineError

ResultCallback = Callable[[Verdict | EngineError], None]
#: ``StreamingEngine.submit_many``'s callback: the index of the message in the list, then
#: what :data:`ResultCallback` is told.
BatchResultCallback = Callable[[int, Verdict | EngineError], None]
#: ``on_result(index, verdict)`` for each ``(index, verdict)`` pair, in order, in one call: a
#: streaming engine that settles many answers at once (one read) may use it instead.
VerdictsCallback = Callable[[list[tuple[int, Verdict]]], None]

#: A plugin's config type (its ``Config`` dataclass).
ConfigT = TypeVar("ConfigT")
SharedT = TypeVar("SharedT")


@dataclass(frozen=True)
class NoOptions:
    """Config of a plugin that takes no options."""


class SharedConnections:
    """Connections that the plugins of one pipeline share, each under the name of the plugin
    that owns it (an IRC source's connection, which the IRC action sink acts through).

    The pipeline owns one and hands it to each plugin it runs (:meth:`Plugin.bind`), so two
    pipelines, or two daemons, never reach each other's connections.
    """

    def __init__(self) -> None:
        self._by_owner: dict[str, object] = {}

    def provide(self, owner: str, connection: object) -> None:
        """``owner`` (a plugin's name) shares ``connection``: one connection per owner."""
        known = self._by_owner.setdefault(owner, connection)
        if known is not connection:
            raise ValueError(f"{owner!r} already shares a connection")

    def find(self, owner: str, kind: type[SharedT]) -> SharedT | None:
        """The connection ``owner`` shares, if it is a ``kind``; None otherwise."""
        connection = self._by_owner.get(owner)
        return connection if isinstance(connection, kind) else None

    def owners(self) -> list[str]:
        """The names of the plugins that share a connection."""
        return sorted(self._by_owner)


class Intake(Protocol):
    """Where a source hands its messages. ``submit`` and ``submit_many`` block while the
    pipeline is full; a source that reads many messages at once hands them over with one
    ``submit_many`` (cheaper than a ``submit`` each)."""

    async def submit(self, message: Message) -> None: ...

    async def submit_many(self, messages: Sequence[Message]) -> None:
        """Hand over ``messages`` in order; cancelled part-way (the stop), the intake keeps
        the ones it had not taken yet: they are still decided."""

    def report_invalid(self, source: str, reason: str) -> None:
        """Count and log a chat line that could not become a message."""


class _OptionlessByDefault:
    # The runtime default of ``Plugin.Config``: a plugin that declares no Config takes no
    # options. Kept off ``Plugin`` so that ``Plugin.Config`` can be typed by its ConfigT.
    Config: type[Any] = NoOptions


class Plugin(_OptionlessByDefault, Generic[ConfigT]):
    """Common ground of sources, sinks and engines, generic over the plugin's config."""

    #: The dataclass the plugin's TOML table is validated into (``NoOptions`` by default).
    Config: type[ConfigT]

    def __init__(self, name: str, config: ConfigT) -> None:
        self.name = name
        self.config: ConfigT = config
        self.log = logging.getLogger(f"chatmod.{self.kind}.{name}")

    kind: ClassVar[str] = "plugin"

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`~chatmod.errors.PluginError` when the plugin cannot run here (an
        optional dependency is missing); checked once the config uses it. By default it can."""

    def bind(self, connections: SharedConnections) -> None:
        """Called once by the pipeline before the plugin runs: share a connection
        (``connections.provide``) or keep ``connections`` to find one shared by another
        plugin. By default a plugin shares nothing."""

    def statistics(self) -> dict[str, float]:
        """Counters and gauges for logs and metrics. Keys are counters (they only go up)
        unless listed in ``chatmod.runtime.metrics.GAUGE_KEYS``; ``connection_up.<name>`` (1 or 0)
        says whether one of the plugin's connections is usable."""
        return {}

    def reconfigure(self, config: ConfigT) -> bool:
        """Take new options while running (SIGHUP); False when that needs a restart."""
        return False


class Source(Plugin[ConfigT], abc.ABC):
    """Turns an outside chat into messages."""

    kind = "source"

    @abc.abstractmethod
    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read messages and ``await intake.submit(...)`` each; return when the chat ends.

        Cancellation means "stop reading": already-submitted messages are still decided, and
        so is a message whose ``submit`` was cancelled (the intake keeps it). A source that
        reads several messages at once keeps the rest for :meth:`hand_over`. If ``run``
        fails after it reported ready, it is called again (with backoff) on the same object.
        """

    async def hand_over(self, intake: Intake) -> None:
        """After reading stopped: submit what was read but not yet submitted. Runs within
        the drain deadline; the default has nothing to hand over."""

    def unsubmitted(self) -> int:
        """Messages read from outside and still not submitted (counted undecided at the
        stop, which makes the exit status 1)."""
        return 0

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        """Every sink has taken the decisions for these messages (e.g. Redis ``XACK``)."""


class Sink(Plugin[ConfigT], abc.ABC):
    """Takes decisions and confirms each batch by returning from :meth:`write`."""

    kind = "sink"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (connections); the default has none."""
        task_status.started()

    @abc.abstractmethod
    async def write(self, decisions: Sequence[Decision]) -> None:
        """Take these decisions; raise :class:`~chatmod.errors.SinkError` if they could not be."""

    async def aclose(self) -> None:
        """Flush and release; called once after the last write."""

    def reopen(self) -> None:
        """Reopen files (SIGHUP, after logrotate moved them)."""

    async def write_alert(self, record: Mapping[str, Any]) -> None:
        """An alert (e.g. a verified keyword alert): ``{"type": "alert", ...}``. Sinks that
        do not show alerts ignore it."""


class Engine(Plugin[ConfigT], abc.ABC):
    """Takes messages, returns verdicts. It may batch, pipeline or stream internally."""

    kind = "engine"

    #: True when the engine bounds every call itself (its own deadlines and fallbacks, or it
    #: never blocks), so the chain need not wrap each call in a timeout.
    enforces_own_timeout: ClassVar[bool] = False

    #: False for an engine that answers in-process in microseconds (a word list): as primary
    #: its verdicts skip the verdict cache, whose key (the normalised text) costs more than
    #: asking the engine again.
    worth_caching: ClassVar[bool] = True

    #: The routes its verdicts can take (``Verdict.route``): their /metrics series exist
    #: from the start.
    verdict_routes: ClassVar[tuple[str, ...]] = ()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (batching, connections); the default has none."""
        task_status.started()

    def rejudge(self, recorded: Verdict) -> Verdict | None:
        """``chatmod replay``: the verdict this engine, as configured now, gives a message it
        judged before as ``recorded``, without asking again (e.g. new thresholds applied to
        the recorded score); None when it cannot tell without asking. The default keeps the
        recorded verdict: the engine is assumed to answer the same text the same way."""
        return recorded

    @abc.abstractmethod
    async def moderate(self, message: Message) -> Verdict:
        """The verdict for one message; many calls run concurrently.

        Raise :class:`~chatmod.errors.EngineError` when no verdict can be had.
        """

    async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict | Exception]:
        """The verdict for each message, in order, or the exception (an
        :class:`~chatmod.errors.EngineError` when no verdict can be had) it ended with.

        An engine that answers a list at once (in-process: a word list in microseconds, the
        local model in one batch) overrides it: as primary it is then handed everything the
        intake holds in one call (see :func:`takes_batches`), each list in its own task, so
        lists overlap up to the pipeline's concurrency. The default asks :meth:`moderate` for
        each, concurrently; the pipeline does not use it as primary: it keeps a task per
        message for such an engine, so one slow message never holds the others.
        """
        results: list[Verdict | Exception] = [EngineError("not asked")] * len(messages)

        async def ask(index: int, message: Message) -> None:
            try:
                results[index] = await self.moderate(message)
            except Exception as exc:
                results[index] = exc

        async with trio.open_nursery() as asking:
            for index, message in enumerate(messages):
                asking.start_soon(ask, index, message)
        return results


def takes_batches(engine: Engine[Any]) -> bool:
    """``engine`` answers a list at once: its class overrides :meth:`Engine.moderate_many`,
    and no subclass changed :meth:`Engine.moderate` since (a subclass that changes only
    ``moderate`` must be asked through it)."""
    return _answers_lists(type(engine))


@cache
def _answers_lists(cls: type[Engine[Any]]) -> bool:
    def definer(method: str) -> type:
        return next(c for c in cls.__mro__ if method in vars(c))

    batches = definer("moderate_many")
    return batches is not Engine and issubclass(batches, definer("moderate"))


class StreamingEngine(Engine[ConfigT], abc.ABC):
    """An engine that carries many messages over one connection. As primary engine it is fed
    through :meth:`submit`, with no waiting task per message: what lets one connection carry
    thousands of messages a second. It bounds its own time (every path has a deadline)."""

    enforces_own_timeout = True

    @abc.abstractmethod
    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        """Start moderating ``message``; call ``on_result`` exactly once, later, with its
        :class:`Verdict` or an :class:`~chatmod.errors.EngineError`. ``on_result`` is sync and
        never blocks. Waiting here (e.g. to send) is backpressure."""

    #: True for an engine whose :meth:`submit_many` takes ``on_verdicts`` (the stage passes
    #: it only then: an engine written before it need not know of it).
    settles_in_lists = False

    async def submit_many(
        self, messages: Sequence[Message], on_result: BatchResultCallback,
        on_verdicts: VerdictsCallback | None = None,
    ) -> None:
        """:meth:`submit` for each of ``messages``: ``on_result(index, result)`` is called
        exactly once per message. It does not raise: a message it could not take is told an
        :class:`~chatmod.errors.EngineError`. The default submits them one by one; an engine
        that can send a list at once (one write) overrides it. An engine that sets
        :attr:`settles_in_lists` may tell many verdicts at once through ``on_verdicts``
        instead (each message still told exactly once, through one or the other)."""
        for index, message in enumerate(messages):
            try:
                await self.submit(message, partial(on_result, index))
            except Exception as exc:  # a bug in the engine: the fallback decides it
                self.log.error("failed to take message %s: %s", message.id, exc,
                               exc_info=self.log.isEnabledFor(logging.DEBUG))
                on_result(index, EngineError(f"{type(exc).__name__}: {exc}"))
