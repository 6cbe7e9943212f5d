from __future__ import annotations

import os

import trio

from chatmod.plugins.stdin import StdinConfig, StdinSource

from .helpers import CollectingIntake


async def read_through_pipe(data: bytes, **options: object) -> CollectingIntake:
    read_fd, write_fd = os.pipe()
    source = StdinSource("stdin", StdinConfig(**options), fd=read_fd)  # type: ignore[arg-type]
    intake = CollectingIntake()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, feed)
            with trio.fail_after(10):
                await source.run(intake)
    finally:
        os.close(read_fd)
    return intake


async def test_text_lines_become_messages_and_bad_ones_are_reported() -> None:
    data = (
        b"first\n\n   \n"
        + b"bad \xff utf8\n"
        + b"x" * 200_000 + b"\n"
        + b"ctrl \x00\x1b[31m chars\r\n"
        + b"last without newline"
    )
    intake = await read_through_pipe(data, format="text", channel="#c", author="bob")
    texts = [m.text for m in intake.messages]
    assert texts == ["first", "bad \ufffd utf8", "ctrl \x00\x1b[31m chars", "last without newline"]
    assert intake.messages[0].channel == "#c"
    assert intake.messages[0].author == "bob"
    assert len({m.id for m in intake.messages}) == 4
    assert intake.invalid == [
        "line 4: invalid UTF-8 replaced with U+FFFD",
        "line 5: 200000 bytes is over max_line_bytes (65536); skipped",
    ]


async def test_jsonl_lines_with_errors_reported_by_line_number() -> None:
    data = b'{"text": "a", "id": "1"}\n{oops\n\n{"id": 3}\n{"text": "b", "channel": "#x"}\n'
    intake = await read_through_pipe(data, format="jsonl", channel="#default")
    assert next((m.id, m.text, m.channel) for m in intake.messages) == ("1", "a", "#default")
    assert intake.messages[1].text == "b"
    assert intake.messages[1].channel == "#x"
    assert len(intake.invalid) == 2
    assert intake.invalid[0].startswith("line 2: invalid JSON")
    assert intake.invalid[1] == "line 4: 'text' must be a string, found nothing; skipped"


async def test_a_line_both_undecodable_and_not_json_is_reported_once() -> None:
    # It used to count twice in "invalid input": once for its UTF-8, once for its JSON.
    intake = await read_through_pipe(b'\xff\n{"text": "ok \xff"}\n', format="jsonl")
    assert [m.text for m in intake.messages] == ["ok \ufffd"]
    assert len(intake.invalid) == 2
    assert intake.invalid[0].startswith("line 1: invalid JSON")
    assert intake.invalid[1] == "line 2: invalid UTF-8 replaced with U+FFFD"
