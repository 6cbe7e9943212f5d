"""``chatmod stats search --plot FILE.png``: passed, flagged and deleted comments per minute.

matplotlib draws it (the ``plot`` extra): axes, dates and legends are its trade, not ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from chatmod.chatsight.stats import Record
from chatmod.errors import ChatmodError

SERIES = (("passed", "#4c9a2a"), ("flagged", "#e0a100"), ("deleted", "#c0392b"))


def plot_records(records: Sequence[Record], path: Path, *, title: str) -> None:
    """Write a PNG chart of ``records`` to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display here
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChatmodError("--plot needs matplotlib: pip install 'chatmod[plot]'") from None
    figure, axes = plt.subplots(figsize=(11, 4), dpi=100)
    try:
        minutes = [mdates.date2num(r.minute) for r in records]  # type: ignore[no-untyped-call]
        for name, colour in SERIES:
            axes.plot(minutes, [getattr(r.counts, name) for r in records], label=name,
                      color=colour, linewidth=1.0, marker="." if len(records) < 200 else None)
        axes.set_title(f"chatmod: comments per minute, {title}")
        axes.set_ylabel("comments per minute")
        formatter = mdates.DateFormatter("%m-%d %H:%M")  # type: ignore[no-untyped-call]
        axes.xaxis.set_major_formatter(formatter)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
        if not records:
            axes.text(0.5, 0.5, "no records in this range", ha="center", va="center",
                      transform=axes.transAxes)
        figure.autofmt_xdate()
        figure.tight_layout()
        try:
            figure.savefig(path, format="png")
        except OSError as exc:
            raise ChatmodError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
