"""The OJS wire parser on its own: strict counts, both list shapes, Go's nulls and times, never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ojsctrl.ojs.errors import OJSError
from ojsctrl.ojs.wire import (
    MAX_COUNT,
    as_count,
    json_object,
    optional_time,
    parse_admin_queue,
    parse_page,
    parse_queue_name,
    parse_queue_stats,
    parse_worker,
)

# ---- strict parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [True, False, None, "3", 1.5, float("nan"), float("inf"), -1, MAX_COUNT + 1, [], {}]
)
def test_counts_reject_garbage(value: Any) -> None:
    with pytest.raises(OJSError):
        as_count(value, "count", "u")


def test_counts_accept_whole_numbers() -> None:
    assert as_count(3, "c", "u") == 3
    assert as_count(3.0, "c", "u") == 3
    assert as_count(0, "c", "u") == 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
_queue_items = st.fixed_dictionaries(
    {"name": _json | st.text(min_size=1, max_size=5)},
    optional={"counts": _json | st.fixed_dictionaries({"available": _json, "active": _json})},
)


@given(item=_json | _queue_items)
def test_queue_item_parser_never_crashes(item: Any) -> None:
    try:
        q = parse_admin_queue(item, "u")
    except OJSError:
        return
    assert isinstance(q.name, str) and q.name
    assert 0 <= q.available <= MAX_COUNT and 0 <= q.active <= MAX_COUNT
    assert type(q.available) is int and type(q.active) is int


@given(
    item=_json
    | st.fixed_dictionaries(
        {"id": _json, "active_jobs": _json},
        optional={
            "state": _json,
            "directive": _json,
            "hostname": _json,
            "metadata": _json | st.fixed_dictionaries({"kubernetes_pod": _json}),
        },
    )
)
def test_worker_parser_never_crashes(item: Any) -> None:
    try:
        w = parse_worker(item, "u")
    except OJSError:
        return
    assert type(w.active_jobs) is int and 0 <= w.active_jobs <= MAX_COUNT
    assert all(type(v) is str for v in (w.state, w.directive, w.hostname, w.pod))


def test_null_lists_and_heartbeat_times_as_go_servers_write_them() -> None:
    # ojs-backend-redis encodes an empty queue list as null (a nil slice).
    assert parse_page({"queues": None}, "queues", "http://x").items == []
    with pytest.raises(OJSError):
        parse_page({}, "queues", "http://x")
    assert optional_time("2026-02-01T10:00:00.123456789Z", "t", "u") == pytest.approx(1769940000.123456)
    assert optional_time("2026-02-01T11:00:00+01:00", "t", "u") == 1769940000.0
    assert optional_time(None, "t", "u") is None
    for bad in ("yesterday", "2026-02-01T10:00:00"):
        with pytest.raises(OJSError, match=r"RFC 3339|time zone"):
            optional_time(bad, "t", "u")


@pytest.mark.parametrize(
    "body",
    [
        {"queue": {"name": "q", "available": 3, "active": 1}},
        {"queue": "q", "stats": {"available": 3, "active": 1}},
    ],
)
def test_queue_stats_in_both_shapes(body: dict[str, Any]) -> None:
    counts = parse_queue_stats("q", body, "u")
    assert (counts.name, counts.available, counts.active) == ("q", 3, 1)


def test_queue_stats_of_neither_shape_name_what_was_expected() -> None:
    with pytest.raises(OJSError, match="expected a 'queue' or 'stats' object"):
        parse_queue_stats("q", {"queue": "q"}, "u")


def test_queue_names_as_strings_or_objects() -> None:
    assert parse_queue_name("a", "u") == "a"
    assert parse_queue_name({"name": "b"}, "u") == "b"
    with pytest.raises(OJSError, match=r"queues\[\]\.name"):
        parse_queue_name({"name": ""}, "u")


def test_json_object_refuses_broken_json_and_non_objects() -> None:
    assert json_object(b'{"a": 1}', "u") == {"a": 1}
    with pytest.raises(OJSError, match="not valid JSON") as exc:
        json_object(b"{", "http://x/y")
    assert exc.value.reason == "InvalidResponse" and exc.value.url == "http://x/y"
    with pytest.raises(OJSError, match="body must be an object"):
        json_object(b"[]", "u")
