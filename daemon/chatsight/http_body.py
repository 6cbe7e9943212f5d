"""A request body that httpx may abandon halfway.

httpx wraps ``content=bytes`` in an async generator (encode/httpx#3686, fix pending upstream
in encode/httpx#3777). httpcore iterates it and awaits the socket write inside its loop, so a
request cancelled mid-body (a websocket reply winning the race, a deadline, shutdown) leaves
that generator suspended; trio warns when it is garbage collected. An iterator object has no
frame to leave suspended.
"""

from __future__ import annotations

import httpx


class OneChunkBody(httpx.AsyncByteStream):
    """``body`` as a single chunk, through a plain iterator rather than an async generator."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._sent = False

    def __aiter__(self) -> OneChunkBody:
        # Each iteration (a retry on a fresh connection) starts from the beginning.
        self._sent = False
        return self

    async def __anext__(self) -> bytes:
        if self._sent:
            raise StopAsyncIteration
        self._sent = True
        return self._body


def post_request(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> httpx.Request:
    """``POST body`` to ``url`` with the client's settings (timeouts, limits), its body a
    :class:`OneChunkBody`."""
    request = client.build_request("POST", url, content=body, headers=headers)
    request.stream = OneChunkBody(body)  # same bytes, same Content-Length
    return request
