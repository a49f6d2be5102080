"""The reorder buffer and client identities: pure units of ``pirus_bridge.counter``."""

from __future__ import annotations

import json

from pirus_bridge.counter import Hasher, ReorderBuffer, event_from_json, event_json, event_to_json
from pirus_bridge.events import MetricType, UsageEvent


def event(ts: int, item: str = "1", ip: str = "192.0.2.1", ua: str = "Mozilla/5.0") -> UsageEvent:
    return UsageEvent(ts, item, f"oai:x:{item}", MetricType.INVESTIGATION,
                      f"https://r.example/{item}/", ip, ua, "", 200)


def test_events_are_released_in_time_order_once_older_than_the_window() -> None:
    buffer = ReorderBuffer(10)
    assert buffer.push(event(100, "a")) == []
    assert buffer.push(event(95, "b")) == []  # late, but within the window
    assert [e.item for e in buffer.push(event(108, "c"))] == ["b"]  # horizon 98
    assert [e.item for e in buffer.push(event(112, "d"))] == ["a"]  # horizon 102
    assert [e.item for e in buffer.drain()] == ["c", "d"]
    assert len(buffer) == 0


def test_equal_times_keep_arrival_order() -> None:
    buffer = ReorderBuffer(0)
    for item in "xyz":
        buffer.push(event(50, item))
    assert [e.item for e in buffer.push(event(60, "later"))] == ["x", "y", "z"]


def test_held_json_follows_the_held_events_as_they_change() -> None:
    buffer = ReorderBuffer(10)
    for ts, item in ((100, "a"), (97, "b"), (105, "c")):
        buffer.push(event(ts, item))
    first = buffer.held_json()
    assert [event_from_json(json.loads(t)) for t in first] == [
        event(97, "b"), event(100, "a"), event(105, "c")]
    buffer.push(event(111, "d"))  # releases b (97) and a (100)
    second = buffer.held_json()
    assert [json.loads(t)["item"] for t in second] == ["c", "d"]
    assert second[0] is first[2]  # c's text is the one built before
    assert [event_from_json(json.loads(t)) for t in second] == [event(105, "c"), event(111, "d")]
    buffer.release_before(200)
    assert buffer.held_json() == []


def test_identities_share_the_client_digest_and_slice_sessions_by_utc_hour() -> None:
    hasher = Hasher("salt")
    base = 1_700_000_000 - 1_700_000_000 % 3600  # the start of a UTC hour
    a = hasher.identities(event(base))
    b = hasher.identities(event(base + 3599))
    c = hasher.identities(event(base + 3600))
    assert a == b
    assert a.user == a.client == c.client and a.session != c.session
    assert a.session == a.client + f"{base // 3600 % 24:02d}"
    other = hasher.identities(event(base, ua="curl/8"))
    assert other.client != a.client
    assert Hasher("other salt").identities(event(base)).client != a.client


def test_a_logged_session_id_is_both_user_and_session() -> None:
    hasher = Hasher("salt")
    ids = hasher.identities(UsageEvent(1_700_000_000, "1", None, MetricType.REQUEST, "u",
                                       "192.0.2.1", "ua", "", 200, session="abc"))
    assert ids.user == ids.session != ids.client


def test_event_json_is_event_to_json_as_compact_json() -> None:
    tricky = UsageEvent(1_700_000_000, 'it"em\\1', None, MetricType.REQUEST,
                        "https://r.example/1/é.pdf?a=\"b\"", "2001:db8::1",
                        "Mozilla/5.0 \u2603\ttab", "https://ref.example/?q=\\x", 304,
                        session="s\u00e9ss", rule="download")
    for e in (tricky, event(5), UsageEvent(1, "i", "oai:x:i", MetricType.INVESTIGATION, "u",
                                           "ip", "", "", 200, None, "")):
        text = event_json(e)
        assert json.loads(text) == event_to_json(e)
        assert event_from_json(json.loads(text)) == e
        assert text == json.dumps(event_to_json(e), separators=(",", ":"))
