"""Hypothesis strategies for what a peer may send an HTTP server: requests right and wrong
(methods, targets, versions, headers, framing, bodies), truncated ones, pipelined ones, and
garbage. Also the fuzz settings: modest by default, ``HYPOTHESIS_PROFILE=thorough`` for
10,000 examples a test."""

from __future__ import annotations

import os
from datetime import datetime

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

THOROUGH = "thorough"
THOROUGH_EXAMPLES = 10_000
settings.register_profile(THOROUGH, max_examples=THOROUGH_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


def fuzz_settings(examples: int) -> settings:
    """``examples`` examples (no deadline: real sockets), or the thorough profile's count."""
    if os.environ.get("HYPOTHESIS_PROFILE") == THOROUGH:
        return settings(settings.get_profile(THOROUGH))
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


ROUTES = ["/healthz", "/readyz", "/metrics", "/stats/moderation", "/stats/moderation/search",
          "/webhooks/chatsight", "/", "*", "/healthz?x=1", "http://test/healthz", "/%00",
          "/" + "a" * 5000]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
           "PRI", "get", ""]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 x", "http/1.1", ""]
HEADER_NAMES = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect",
                "Content-Type", "Upgrade", "X-Chatmod", "Host ", " Host", ""]
HEADER_VALUES = ["0", "5", "-1", "99999999999999999999", "chunked", "gzip, chunked", "close",
                 "keep-alive", "upgrade", "100-continue", "h2c", "websocket",
                 "application/json", "", " ", "a\tb", "x" * 20000]
LINE_ENDS = ["\r\n", "\n", "\r", "\r\r\n"]


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "replace")


search_times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
                 ).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S").rjust(19, "0")),
    st.sampled_from(["0001-01-01 00:00:00", "9999-12-31 23:59:59", "9999-12-31 23:30:00",
                     "1970-01-01 00:00:00", "2026-02-30 00:00:00", ""]),
    _text(25),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text(20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text(10), inner, max_size=4),
    max_leaves=10)
search_bodies = st.one_of(
    st.fixed_dictionaries({"timefrom": search_times, "timeto": search_times}),
    st.fixed_dictionaries({"timefrom": json_values, "timeto": json_values}),
    st.dictionaries(st.sampled_from(["timefrom", "timeto", "x"]), search_times | json_values),
    json_values,
)


@st.composite
def search_body(draw: st.DrawFn) -> bytes:
    """A body for ``POST /stats/moderation/search``: mostly JSON, near-valid or not."""
    import orjson

    body = draw(search_bodies)
    try:
        return orjson.dumps(body)
    except TypeError:  # integers past 64 bits
        return repr(body).encode()


bodies = st.one_of(st.binary(max_size=300), search_body(),
                   _text(300).map(_encode), st.just(b""))


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = bytearray(), 0
    for size in sizes:
        piece = body[at:at + size]
        if not piece:
            break
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        at += len(piece)
    return bytes(out + b"0\r\n\r\n")


@st.composite
def http_request(draw: st.DrawFn) -> bytes:
    """One request: each part usually well-formed, sometimes not; its framing right, wrong
    or missing; sometimes cut short."""
    method = draw(st.sampled_from(METHODS) | _text(8))
    target = draw(st.sampled_from(ROUTES) | _text(40))
    version = draw(st.sampled_from(VERSIONS))
    end = draw(st.sampled_from(LINE_ENDS)) if draw(st.integers(0, 9)) == 0 else "\r\n"
    body = draw(bodies)
    headers = [("Host", "test")] if draw(st.booleans()) else []
    framing = draw(st.sampled_from(["length", "chunked", "none", "wrong length"]))
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "wrong length":
        headers.append(("Content-Length", str(draw(st.integers(-2, 2 * len(body) + 2)))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        body = _chunked(body, draw(st.lists(st.integers(1, 64), min_size=1, max_size=6)))
    headers += draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES) | _text(12),
                                       st.sampled_from(HEADER_VALUES) | _text(30)),
                             max_size=5))
    headers = draw(st.permutations(headers))
    head = f"{method} {target} {version}{end}" + "".join(
        f"{name}: {value}{end}" for name, value in headers) + end
    data = _encode(head) + body
    if draw(st.integers(0, 5)) == 0:  # cut short anywhere
        data = data[:draw(st.integers(0, len(data)))]
    return data


peer_bytes = st.one_of(
    http_request(),
    st.lists(http_request(), min_size=2, max_size=4).map(b"".join),  # pipelined
    st.binary(max_size=600),  # garbage
    st.tuples(http_request(), st.binary(max_size=100)).map(b"".join),  # then garbage
)
