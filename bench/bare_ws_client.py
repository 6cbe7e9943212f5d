"""The baseline for bench/chatsight.py: a minimal trio-websocket client that only sends
requests and matches replies by reference, nothing else.

    python bench/bare_ws_client.py URL KEY throughput N WINDOW
    python bench/bare_ws_client.py URL KEY rate RATE SECONDS

Prints one JSON object: messages/s (throughput) or round-trip p50/p99 ms (rate).
"""

from __future__ import annotations

import sys
import time

import orjson
import trio
import trio_websocket


async def throughput(
    ws: trio_websocket.WebSocketConnection, count: int, window: int
) -> dict[str, float]:
    slots = trio.Semaphore(window)
    pending: set[str] = set()
    done = trio.Event()
    answered = 0

    async def read() -> None:
        nonlocal answered
        while answered < count:
            reply = orjson.loads(await ws.get_message())
            reference = reply["response"]["metadata"]["self_reference"]
            if reference in pending:
                pending.discard(reference)
                answered += 1
                slots.release()
        done.set()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for i in range(count):
            await slots.acquire()
            reference = f"r-{i}"
            pending.add(reference)
            await ws.send_message(orjson.dumps({"sample": f"hello there number {i}",
                                                "reference": reference}).decode())
        await done.wait()
    return {"msgs_per_s": count / (time.perf_counter() - start)}


async def at_rate(
    ws: trio_websocket.WebSocketConnection, rate: float, seconds: float
) -> dict[str, float]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    count = int(rate * seconds)

    async def read() -> None:
        while len(latencies) < count:
            reply = orjson.loads(await ws.get_message())
            reference = reply["response"]["metadata"]["self_reference"]
            started = sent.pop(reference, None)
            if started is not None:
                latencies.append((time.perf_counter() - started) * 1000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        start = time.perf_counter()
        for i in range(count):
            await trio.sleep_until(trio.current_time() + max(0.0, start + i / rate
                                                             - time.perf_counter()))
            reference = f"r-{i}"
            sent[reference] = time.perf_counter()
            await ws.send_message(orjson.dumps({"sample": f"hello there number {i}",
                                                "reference": reference}).decode())
    latencies.sort()
    return {"p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99)]}


async def main() -> None:
    url, key, mode, a, b = sys.argv[1:6]
    async with trio_websocket.open_websocket_url(
        url, extra_headers=[(b"x-chatsight-api-auth", key.encode())],
        message_queue_size=256,
    ) as ws:
        if mode == "throughput":
            result = await throughput(ws, int(a), int(b))
        else:
            result = await at_rate(ws, float(a), float(b))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    trio.run(main)
