"""A minimal IRC client for tests: a person in the chat."""

from __future__ import annotations

import trio
from irctokens.line import Line, build
from irctokens.stateful import StatefulDecoder


class Client:
    """A person in the chat: registers, joins, speaks, and keeps every line it receives."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.lines: list[Line] = []
        self._stream: trio.SocketStream | None = None
        self._got_line = trio.Event()

    async def connect(self, nursery: trio.Nursery, port: int, channel: str) -> None:
        self._stream = await trio.open_tcp_stream("127.0.0.1", port)
        nursery.start_soon(self._read)
        await self.send("NICK", self.nick)
        await self.send("USER", self.nick, "0", "*", self.nick)
        await self.wait_for(lambda line: line.command == "001")
        await self.send("JOIN", channel)
        await self.wait_for(lambda line: line.command == "366")  # end of NAMES

    async def send(self, command: str, *params: str) -> None:
        assert self._stream is not None
        await self._stream.send_all(f"{build(command, list(params)).format()}\r\n".encode())

    async def say(self, channel: str, text: str) -> None:
        await self.send("PRIVMSG", channel, text)

    async def wait_for(self, predicate: object, within: float = 10.0) -> Line:
        with trio.fail_after(within):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):  # type: ignore[operator]
                        return line
                seen = len(self.lines)
                self._got_line = trio.Event()
                await self._got_line.wait()

    async def _read(self) -> None:
        assert self._stream is not None
        decoder = StatefulDecoder()
        while True:
            try:
                data = await self._stream.receive_some(4096)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # closed by aclose(), or by the server
            if not data:
                return
            for line in decoder.push(data) or []:
                if line.command == "PING":
                    await self.send("PONG", *line.params)
                self.lines.append(line)
            self._got_line.set()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
