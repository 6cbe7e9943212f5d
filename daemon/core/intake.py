"""The intake: where sources hand their messages to the pipeline, and the batches between
the pipeline's stages.

Stages hand each other lists (everything one step has ready), so a task switch and a channel
operation are paid per batch instead of per message. A channel of lists would count lists;
the bound that matters is in messages, so each such channel is unbounded and a :class:`Room`
beside it counts the messages in it: a sender takes room for what it sends (waiting while
there is none: backpressure), the receiver gives it back as it takes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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


class Room:
    """Free places for ``size`` items between two stages (see the module docstring)."""

    __slots__ = ("_lot", "free", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._lot = trio.lowlevel.ParkingLot()

    async def take(self, wanted: int) -> int:
        """Take between 1 and ``wanted`` places: as many as are free, waiting (a checkpoint)
        only while none is. Cancelled while waiting, it took nothing."""
        while self.free <= 0:
            await self._lot.park()
        taken = min(wanted, self.free)
        self.free -= taken
        return taken

    def force(self, count: int) -> None:
        """Take ``count`` places without waiting, even past the size: for a sender that
        bounds what it sends by other means (the streaming stage's slots)."""
        self.free -= count

    def give_back(self, count: int) -> None:
        """``count`` items left: their places are free again."""
        self.free += count
        if self._lot and self.free > 0:
            self._lot.unpark_all()


async def send_batch(
    channel: trio.MemorySendChannel[list[ItemT]], room: Room, items: list[ItemT]
) -> None:
    """Send ``items`` in as few lists as the room allows, waiting while it is full."""
    start, count = 0, len(items)
    while start < count:
        taken = await room.take(count - start)
        channel.send_nowait(items if taken == count else items[start:start + taken])
        start += taken


async def receive_batch(
    channel: trio.MemoryReceiveChannel[list[ItemT]], limit: int
) -> list[ItemT]:
    """Every item the channel holds (at least one, waiting for it; about ``limit`` at most:
    lists are not split). The caller gives their room back once it has taken them on.
    Raises ``trio.EndOfChannel`` at the end."""
    batch = await next_item(channel)
    while len(batch) < limit:
        try:
            more = channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        batch = batch + more
    return batch


class IntakeCounts(Protocol):
    """What the intake counts: messages handed over and input that was not a message."""

    received: int
    invalid: int


class SourceIntake:
    """The :class:`~chatmod.core.interfaces.Intake` handed to one source.

    Messages whose submission is cancelled (the stop) were already read: the intake keeps
    them in ``held`` and the pipeline submits them during the drain, so nothing read is
    dropped. A list is handed over in parts when the pipeline has room for only part of it.
    """

    __slots__ = ("_pipeline", "_room", "_send", "held")

    def __init__(self, pipeline: IntakeCounts, send: trio.MemorySendChannel[list[Message]],
                 room: Room) -> None:
        self._pipeline = pipeline
        self._send = send
        self._room = room
        self.held: list[Message] = []

    async def submit(self, message: Message) -> None:
        # Without a checkpoint when there is room: a yield per message costs more than the
        # message's own work. The source still waits (and can be cancelled) when it is full.
        room = self._room
        if room.free > 0:
            room.free -= 1
        else:
            try:
                await room.take(1)
            except trio.Cancelled:
                self.held.append(message)
                raise
        self._send.send_nowait([message])
        self._pipeline.received += 1

    async def submit_many(self, messages: Sequence[Message]) -> None:
        messages = list(messages)  # the caller may reuse its own list
        start, count = 0, len(messages)
        while start < count:
            try:
                taken = await self._room.take(count - start)
            except trio.Cancelled:
                self.held.extend(messages[start:])
                raise
            self._send.send_nowait(messages if taken == count else messages[start:start + taken])
            self._pipeline.received += taken
            start += taken

    async def submit_held(self) -> None:
        """Submit what a cancelled submission left (the drain); cancelled, it keeps the rest."""
        held = self.held
        while held:
            taken = await self._room.take(len(held))
            self._send.send_nowait(held[:taken])
            del held[:taken]
            self._pipeline.received += taken

    def report_invalid(self, source: str, reason: str) -> None:
        self._pipeline.invalid += 1
        log.warning("%s: %s", source, reason)
