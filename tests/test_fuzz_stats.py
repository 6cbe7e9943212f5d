"""Property tests of the stats protocol (chatmod.chatsight.stats): Chatsight's stats replies,
search requests (what the daemon's and the sandbox's HTTP API read) and the time ranges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.chatsight.stats import (
    COUNTER_KEYS,
    HOUR,
    MAX_RECORDS,
    MINUTE,
    Counts,
    Record,
    api_range,
    format_time,
    lifetime_reply,
    parse_lifetime,
    parse_search,
    parse_search_request,
    parse_time,
    search_reply,
    search_request,
    select_records,
    split_range,
)
from chatmod.errors import ProtocolError

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
# Counters as a provider might send them: numbers, numeric strings (finite or not), junk.
counters = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["1e400", "-1e400", "nan", "inf", "-inf", "1_000", " 7 ", "0x10", ""]),
    json_values,
)
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                        max_value=timedelta(hours=23, minutes=59)).map(timezone)
any_datetimes = st.datetimes(timezones=st.none() | offsets)
# requestTime values: ISO 8601 in every variant, naive or with an offset, or anything else.
stamps = st.one_of(
    any_datetimes.map(lambda d: d.isoformat()),
    any_datetimes.map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.dates().map(lambda d: d.isoformat()),
    st.text(max_size=30),
    json_values,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "requestTime": st.fixed_dictionaries({}, optional={"value": stamps}) | stamps,
        **{key: counters for key in COUNTER_KEYS},
    },
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "api": st.text(max_size=10),
        "success": st.booleans() | json_values,
        "response": st.one_of(
            st.lists(records | json_values, max_size=5),
            st.fixed_dictionaries({key: counters for key in COUNTER_KEYS}),
            st.sampled_from(["Records are currently empty, try again in a little while."]),
            json_values,
        ),
    },
)
replies = st.one_of(envelopes.map(orjson.dumps), json_values.map(orjson.dumps), st.binary())


def lifetime(**counts: object) -> bytes:
    return orjson.dumps({"success": True, "response": {
        key: counts.get(key, "1") for key in COUNTER_KEYS}})


def search(*stamps_and_counts: tuple[str, object]) -> bytes:
    return orjson.dumps({"success": True, "response": [
        {"requestTime": {"value": stamp}, **{key: count for key in COUNTER_KEYS}}
        for stamp, count in stamps_and_counts]})


@given(data=replies)
@example(data=lifetime(commentsPassed="1e400"))  # was OverflowError
@example(data=lifetime(commentsFlagged="nan"))  # was a bare ValueError
@example(data=lifetime(commentsTotal=1e308))
def test_lifetime_reply_is_counts_or_stats_reply_error(data: bytes) -> None:
    try:
        counts = parse_lifetime(data)
    except ProtocolError:
        return
    assert all(isinstance(n, int) for n in (counts.passed, counts.flagged, counts.deleted,
                                            counts.total))


@given(data=replies)
@example(data=search(("0001-01-01T00:00:00+01:00", 1)))  # was OverflowError
@example(data=search(("9999-12-31T23:59:59-01:00", 1)))  # was OverflowError
@example(data=search(("2021-05-10T20:27:55.000Z", "inf")))  # was OverflowError
@example(data=search(("2021-05-10", 1)))
def test_search_reply_is_records_or_stats_reply_error(data: bytes) -> None:
    try:
        found = parse_search(data)
    except ProtocolError:
        return
    for record in found:
        assert record.minute.utcoffset() == timedelta(0)
        assert (record.minute.second, record.minute.microsecond) == (0, 0)


@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_zone_not_utc")
def test_a_search_reply_without_offset_is_read_as_utc() -> None:
    # The document's times are UTC; a naive one must not be read in the machine's local time.
    [record] = parse_search(search(("2021-05-10T20:27:55", 1)))
    assert record.minute == datetime(2021, 5, 10, 20, 27, tzinfo=UTC)


minutes = st.datetimes(max_value=datetime(9999, 12, 31, 23, 58)).map(
    lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC))
counts = st.builds(Counts, *(st.integers(min_value=0, max_value=2**63 - 1),) * 4)


@given(found=st.lists(st.builds(Record, minutes, counts), max_size=5), lifetime_counts=counts)
@example(found=[Record(datetime(999, 1, 1, tzinfo=UTC), Counts())],  # stamped "999-01-01"
         lifetime_counts=Counts())
@example(found=[], lifetime_counts=Counts(total=2**53 + 1))  # was read through a float
def test_our_replies_read_back_as_written(found: list[Record], lifetime_counts: Counts) -> None:
    assert parse_search(search_reply(found)) == found
    assert parse_lifetime(lifetime_reply(lifetime_counts)) == lifetime_counts


# Times as the API writes them, near the ends of the calendar too.
api_times = st.datetimes().map(lambda d: d.replace(microsecond=0, tzinfo=UTC))
# The latest time that still rounds to an hour within the calendar.
LAST_SEARCHABLE = datetime(9999, 12, 31, 23, 29, 59)
searchable_times = st.datetimes(max_value=LAST_SEARCHABLE).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC))


@given(text=st.text() | api_times.map(format_time))
@example(text="9999-12-31 23:59:59")  # rounds past the calendar's end: was OverflowError later
@example(text="0001-01-01 00:00:00")
@example(text=" 2021-05-10 20:27:00\n")
@example(text="2021-05-10 20:27:00\x00")
def test_parse_time_is_a_searchable_time_or_stats_request_error(text: str) -> None:
    try:
        when = parse_time(text)
    except ProtocolError as exc:
        refusal = str(exc)
    else:
        assert parse_time(format_time(when)) == when
        start, end = api_range(when, when)  # whatever is accepted can be rounded and searched
        assert start == end
        assert select_records({}, when, when) == []
        return
    assert repr(text) in refusal  # the error names what it refused


def body(value: Any) -> bytes:
    return orjson.dumps(value)


@given(data=st.one_of(
    st.binary(),
    json_values.map(body),
    st.fixed_dictionaries({}, optional={"timefrom": st.text() | api_times.map(format_time)
                                        | json_values,
                                        "timeto": st.text() | api_times.map(format_time)
                                        | json_values}).map(body),
))
@example(data=body({"timefrom": "9999-12-31 23:59:59", "timeto": "9999-12-31 23:59:59"}))
def test_search_request_is_a_range_or_stats_request_error(data: bytes) -> None:
    try:
        start, end = parse_search_request(data)
    except ProtocolError:
        return
    assert parse_search_request(search_request(start, end)) == (start, end)
    minute = start.replace(second=0)
    rounded_start, rounded_end = api_range(start, end)
    expected = [Record(minute, Counts(total=1))] if rounded_start <= minute < rounded_end else []
    assert select_records({minute: Counts(total=1)}, start, end) == expected


@given(start=searchable_times, end=searchable_times)
@example(start=datetime(9999, 12, 30, 0, 0, tzinfo=UTC),
         end=datetime(9999, 12, 31, 23, 0, tzinfo=UTC))  # one piece reaches the end: overflowed
@example(start=datetime(1, 1, 1, tzinfo=UTC), end=datetime(1, 1, 3, 0, 1, tzinfo=UTC))
def test_a_range_splits_into_whole_hour_requests_that_cover_it(
    start: datetime, end: datetime
) -> None:
    if start > end:
        start, end = end, start
    if end - start > timedelta(days=366):  # keep the list of pieces small
        end = start + timedelta(days=366)
    rounded_start, rounded_end = api_range(start, end)
    pieces = split_range(rounded_start, rounded_end)
    if rounded_start >= rounded_end:
        assert pieces == []
        return
    assert pieces[0][0] == rounded_start
    assert pieces[-1][1] == rounded_end
    for (piece_start, piece_end), following in zip(pieces, [*pieces[1:], None], strict=True):
        assert timedelta(0) < piece_end - piece_start <= MINUTE * MAX_RECORDS
        assert (piece_start - rounded_start) % HOUR == timedelta(0)
        if following is not None:
            assert following[0] == piece_end
