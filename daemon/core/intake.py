"""The intake: where sources hand their messages to the pipeline."""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

import trio

from chatmod.core.model import Message

log = logging.getLogger("chatmod.pipeline")

ItemT = TypeVar("ItemT")


async def next_item(channel: trio.MemoryReceiveChannel[ItemT]) -> ItemT:
    """The channel's next item, with a checkpoint only when it has to wait: a task switch
    per message between stages costs more than the message's own work. A stage that loops
    on it still yields (and can be cancelled) whenever the stage before it falls behind.
    Raises ``trio.EndOfChannel`` at the end."""
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        return await channel.receive()


async def pass_on(channel: trio.MemorySendChannel[ItemT], item: ItemT) -> None:
    """Send ``item``, with a checkpoint only when the channel is full (see :func:`next_item`)."""
    try:
        channel.send_nowait(item)
    except trio.WouldBlock:
        await channel.send(item)


class IntakeCounts(Protocol):
    """What the intake counts: messages handed over and input that was not a message."""

    received: int
    invalid: int


class SourceIntake:
    """The :class:`~chatmod.core.interfaces.Intake` handed to one source.

    A message whose submission is cancelled (the stop) was already read: the intake keeps it
    in ``held`` and the pipeline submits it during the drain, so nothing read is dropped.
    """

    __slots__ = ("_pipeline", "_send", "held")

    def __init__(self, pipeline: IntakeCounts, send: trio.MemorySendChannel[Message]) -> None:
        self._pipeline = pipeline
        self._send = send
        self.held: list[Message] = []

    async def submit(self, message: Message) -> None:
        # Without a checkpoint when there is room: a yield per message costs more than the
        # message's own work. The source still waits (and can be cancelled) when it is full.
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            try:
                await self._send.send(message)
            except trio.Cancelled:
                self.held.append(message)
                raise
        self._pipeline.received += 1

    async def submit_held(self) -> None:
        while self.held:
            message = self.held[0]
            await self._send.send(message)
            self.held.pop(0)
            self._pipeline.received += 1

    def report_invalid(self, source: str, reason: str) -> None:
        self._pipeline.invalid += 1
        log.warning("%s: %s", source, reason)
