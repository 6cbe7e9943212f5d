"""``chatmod review list | show | approve | overturn``: the review queue from the command line.

It works on the store itself (the daemon need not run); a running daemon learns of a review
within about a second (it polls the store), puts an overturned text on its allow-list and
writes the ``{"type": "review"}`` record to its sinks. Every review is written to the audit
log under the state directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
import trio

from chatmod.config.load import choose_config_path, read_config_tables
from chatmod.config.schema import parse_table
from chatmod.config.sections import DaemonSection, ReviewSection
from chatmod.config.state import state_directory
from chatmod.core.text import printable
from chatmod.review.model import APPROVED, OVERTURNED, Review, ReviewItem, decide_review
from chatmod.review.store import open_store
from chatmod.state.audit import AuditEntry, AuditLog, current_user

DEFAULT_LIST_LIMIT = 50
# The longest text shown in one line of `review list`.
LIST_TEXT_WIDTH = 60


def add_arguments(parser: argparse.ArgumentParser,
                  config_argument: Any) -> None:
    """``review``'s actions; ``config_argument`` adds ``-c`` to each."""
    actions = parser.add_subparsers(dest="review_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the items waiting, oldest first")
    config_argument(listing)
    listing.add_argument("--limit", type=int, default=DEFAULT_LIST_LIMIT,
                         help=f"show at most this many (default {DEFAULT_LIST_LIMIT})")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one waiting item in full")
    config_argument(show)
    show.add_argument("id")
    for outcome, verb, what in ((APPROVED, "approve", "the action stands"),
                                (OVERTURNED, "overturn", "the action was wrong: the text is "
                                 "allowed (allow_ttl) and platforms are told to lift it")):
        action = actions.add_parser(verb, help=what)
        config_argument(action)
        action.add_argument("id")
        action.add_argument("--note", default="", help="why (goes to the audit log and the "
                                                        "review record)")
        action.add_argument("--by", default=None, help="who reviewed it (default: your user "
                                                        "name)")
        action.set_defaults(outcome=outcome)


def load_sections(given_path: str | None) -> tuple[ReviewSection, Path | None]:
    """``[review]`` and the state directory of a config, without its engines' secrets."""
    path, _chosen_by = choose_config_path(given_path)
    tables = read_config_tables(path)
    daemon = parse_table(DaemonSection, tables.get("daemon", {}), "daemon")
    review = parse_table(ReviewSection, tables.get("review", {}), "review")
    return review, state_directory(daemon.state_dir)


def run(args: argparse.Namespace) -> int:
    section, state_dir = load_sections(args.config)
    return trio.run(_run, args, section, state_dir)


async def _run(args: argparse.Namespace, section: ReviewSection, state_dir: Path | None) -> int:
    out = sys.stdout
    async with open_store(section, state_dir, create=False) as store:
        if args.review_action == "list":
            items = await store.pending(max(1, args.limit))
            size, _oldest = await store.backlog()
            for item in items:
                summary = item.summary()
                if args.json:
                    out.write(orjson.dumps(summary).decode() + "\n")
                else:
                    out.write(f"{item.id}  {summary['queued']}  {summary['action']}  "
                              f"{summary['channel'] or '-'}  {summary['author'] or '-'}  "
                              f"{printable(item.text, LIST_TEXT_WIDTH)}\n")
            print(f"chatmod: {size} item(s) waiting for review", file=sys.stderr)
            return 0
        if args.review_action == "show":
            item = await store.get(args.id)
            out.write(orjson.dumps({**item.summary(), "record": item.record},
                                   option=orjson.OPT_INDENT_2).decode() + "\n")
            return 0
        by = args.by or current_user()

        def decide(item: ReviewItem) -> Review:
            # Audited before the store commits it: a review that cannot be audited is not made.
            review = decide_review(item, args.outcome, by, args.note, section.allow_ttl)
            _audit(state_dir, review)
            return review

        review = await store.resolve(args.id, decide)
    out.write(f"{review.item.id}: {review.outcome} by {review.by}"
              + (" (its text is allowed until the allow-list entry expires)"
                 if review.allow_until is not None else "") + "\n")
    return 0


def _audit(state_dir: Path | None, review: Review) -> None:
    record = review.record()
    what = "review.overturn" if review.outcome == OVERTURNED else "review.approve"
    detail = {key: record[key] for key in ("review_id", "message_id", "channel", "author",
                                           "action", "text")}
    AuditLog(state_dir).record(AuditEntry(review.by, what, review.note, detail,
                                          review.reviewed_at))
