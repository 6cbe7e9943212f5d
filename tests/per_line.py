"""The per-line view of :class:`~chatmod.protocols.lines.LineFramer`, for tests: one object
per line (:class:`Line` or :class:`~chatmod.protocols.lines.OversizedLine`) instead of the
:class:`~chatmod.protocols.lines.FramedLines` of a read that the stdin source takes."""

from __future__ import annotations

from dataclasses import dataclass

from chatmod.core.quick import quick_init
from chatmod.protocols.lines import FramedLines, LineFramer, OversizedLine


@quick_init
@dataclass(frozen=True, slots=True)
class Line:
    """A line that was kept: its number (from 1) and its bytes without the newline."""

    number: int
    data: bytes


def items(framed: FramedLines) -> list[Line | OversizedLine]:
    """The lines as objects, each with its number."""
    oversized = {item.number: item for item in framed.oversized}
    return [oversized.get(number) or Line(number, data)
            for number, data in enumerate(framed.data, framed.first)]


class PerLineFramer(LineFramer):
    """A :class:`LineFramer` whose reads give one object per line."""

    def feed(self, data: bytes) -> list[Line | OversizedLine]:
        """Lines completed by ``data``, in order."""
        return items(self.feed_lines(data))

    def end(self) -> list[Line | OversizedLine]:
        """The last line, if the stream did not end with a newline."""
        return items(self.end_lines())
