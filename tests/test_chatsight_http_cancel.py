"""A Chatsight HTTP request cancelled while its body is being sent leaves nothing behind.

The websocket reply winning the race, ``http_deadline`` and shutdown all cancel a request at
any point. httpx's own request body is an async generator (encode/httpx#3686): cancelled
mid-body it was left unfinished, and trio warned when it was garbage collected.
"""

from __future__ import annotations

import gc
import warnings

import trio
import trio.testing

from chatmod.chatsight.http import ChatsightHttp

API_KEY = "c.test.0123456789abcdef"
# Far more than loopback's socket buffers hold, so the client blocks mid-body.
HUGE_TEXT = "x" * (32 * 1024 * 1024)


async def test_request_cancelled_mid_body_leaves_no_generator_behind(
    nursery: trio.Nursery,
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    headers_read = trio.Event()

    async def read_headers_then_stall() -> None:
        """Accept one request, read its head and then nothing more."""
        async with listeners[0], await listeners[0].accept() as conn:
            received = b""
            while b"\r\n\r\n" not in received:
                received += await conn.receive_some()
            headers_read.set()
            await trio.sleep_forever()

    nursery.start_soon(read_headers_then_stall)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with trio.fail_after(30):
            async with ChatsightHttp(f"http://127.0.0.1:{port}", API_KEY, retries=0,
                                     timeout=30) as http:
                with trio.CancelScope() as request_scope:
                    async with trio.open_nursery() as client:
                        client.start_soon(http.moderate, HUGE_TEXT)
                        await headers_read.wait()
                        # Both sides are now stuck: the client in the body's write.
                        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                        request_scope.cancel()
                assert request_scope.cancelled_caught
        gc.collect()
    leaks = [str(w.message) for w in caught if "garbage collected" in str(w.message)]
    assert leaks == []
