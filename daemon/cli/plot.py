"""``chatmod stats search --plot FILE.png``: passed, flagged and deleted comments per minute.

matplotlib draws it (the ``plot`` extra): axes, dates and legends are its trade, not ours.
:func:`require_matplotlib` is called before the first request, so a missing extra fails at
once rather than after the API's pacing. Every minute of the range is drawn: a minute with no
record had no comments, so it is a zero, never a line drawn across it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chatmod.chatsight.stats import Counts, Record
from chatmod.errors import ChatmodError

SERIES = (("passed", "#4c9a2a"), ("flagged", "#e0a100"), ("deleted", "#c0392b"))
MINUTE = timedelta(minutes=1)
MATPLOTLIB_MISSING = "--plot needs matplotlib: pip install 'chatmod[plot]'"
UNITS = "comments per minute"


def require_matplotlib() -> None:
    """:class:`ChatmodError` now, before any request, when matplotlib cannot be imported."""
    _pyplot()


def per_minute(records: Sequence[Record], start: datetime, end: datetime
               ) -> tuple[list[datetime], dict[str, list[int]]]:
    """Every minute from ``start`` up to ``end`` and each series' count in it: zero for a
    minute without a record. Records outside the range are left out."""
    by_minute = {record.minute: record.counts for record in records}
    minutes: list[datetime] = []
    minute = start
    while minute < end:
        minutes.append(minute)
        minute += MINUTE
    series = {name: [getattr(by_minute.get(m, Counts()), name) for m in minutes]
              for name, _colour in SERIES}
    return minutes, series


def draw(records: Sequence[Record], start: datetime, end: datetime) -> Any:
    """The chart as a matplotlib figure (the caller closes it)."""
    plt, mdates = _pyplot()
    figure, axes = plt.subplots(figsize=(11, 4), dpi=100)
    minutes, series = per_minute(records, start, end)
    # Each count belongs to its whole minute: a step from its start to the next minute's.
    edges = [mdates.date2num(m) for m in [*minutes, end]]
    for name, colour in SERIES:
        counts = series[name]
        axes.stairs(counts, edges, label=name, color=colour, linewidth=1.0, baseline=None)
    axes.set_title(f"chatmod: {UNITS}, {_utc(start)} to {_utc(end)} UTC")
    axes.set_ylabel(UNITS)
    axes.set_xlabel("minute (UTC)")
    axes.set_xlim(mdates.date2num(start), mdates.date2num(end))
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz="UTC"))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    if not records:
        axes.text(0.5, 0.5, "no comments in this range", ha="center", va="center",
                  transform=axes.transAxes)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def plot_records(records: Sequence[Record], path: Path, start: datetime, end: datetime
                 ) -> None:
    """Write a PNG chart of ``records`` over ``start``..``end`` to ``path``."""
    plt, _mdates = _pyplot()
    figure = draw(records, start, end)
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise ChatmodError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)


def _utc(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")


def _pyplot() -> tuple[Any, Any]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display here
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChatmodError(MATPLOTLIB_MISSING) from None
    return plt, mdates
