"""What a plugin is: the three kinds (source, sink, engine) and the calls the pipeline makes.

Each plugin class has a ``Config`` dataclass (validated by :mod:`chatmod.config.schema` from
its TOML table) and is built as ``cls(name, config)``. Its long-running part is
``async def run(..., *, task_status)``, started with ``await nursery.start(plugin.run, ...)``;
it calls ``task_status.started()`` once ready.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import trio

from chatmod.core.model import Decision, Message, Verdict
from chatmod.errors import EngineError

ResultCallback = Callable[[Verdict | EngineError], None]


@dataclass(frozen=True)
class NoOptions:
    """Config of a plugin that takes no options."""


class Intake(Protocol):
    """Where a source hands its messages. ``submit`` blocks while the pipeline is full."""

    async def submit(self, message: Message) -> None: ...

    def report_invalid(self, source: str, reason: str) -> None:
        """Count and log a chat line that could not become a message."""


class Plugin:
    """Common ground of sources, sinks and engines."""

    Config: ClassVar[type[Any]] = NoOptions

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        self.log = logging.getLogger(f"chatmod.{self.kind}.{name}")

    kind: ClassVar[str] = "plugin"

    def statistics(self) -> dict[str, float]:
        """Counters and gauges for logs and metrics. Keys are counters (they only go up)
        unless listed in ``chatmod.runtime.metrics.GAUGE_KEYS``; ``connection_up.<name>`` (1 or 0)
        says whether one of the plugin's connections is usable."""
        return {}

    def reconfigure(self, config: Any) -> bool:
        """Take new options while running (SIGHUP); False when that needs a restart."""
        return False


class Source(Plugin, abc.ABC):
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


class Sink(Plugin, abc.ABC):
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


class Engine(Plugin, abc.ABC):
    """Takes messages, returns verdicts. It may batch, pipeline or stream internally."""

    kind = "engine"

    #: True when the engine bounds every call itself (its own deadlines and fallbacks, or it
    #: never blocks), so the chain need not wrap each call in a timeout.
    enforces_own_timeout: ClassVar[bool] = False

    #: True when the engine implements :meth:`submit`. As primary engine it is then fed
    #: messages without a waiting task per message: what lets one connection carry thousands
    #: of messages a second. Such an engine must bound its own time (enforces_own_timeout).
    streams: ClassVar[bool] = False

    #: The routes its verdicts can take (``Verdict.route``): their /metrics series exist
    #: from the start.
    verdict_routes: ClassVar[tuple[str, ...]] = ()

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        """Start moderating ``message``; call ``on_result`` exactly once, later, with its
        :class:`Verdict` or an :class:`~chatmod.errors.EngineError`. ``on_result`` is sync and
        never blocks. Waiting here (e.g. to send) is backpressure."""
        raise NotImplementedError(f"engine {self.name} does not stream")

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
