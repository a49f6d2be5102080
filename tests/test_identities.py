"""Identities (COUNTER R5.1 §7.3 users and sessions), line identities and the event codec."""

from __future__ import annotations

import json

from pirus_bridge.counter import (
    LOGGED,
    SURROGATE,
    Hasher,
    action_id,
    event_from_json,
    event_json,
    event_to_json,
    session_of,
)
from pirus_bridge.events import MetricType, UsageEvent


def event(ts: int, item: str = "1", ua: str = "ua", session: str | None = None) -> UsageEvent:
    return UsageEvent(ts, item, None, MetricType.INVESTIGATION, f"u/{item}", "192.0.2.1", ua,
                      "", 200, session)


def test_identities_share_the_client_digest_and_slice_sessions_by_utc_hour() -> None:
    hasher = Hasher("salt")
    base = 1_700_000_000 - 1_700_000_000 % 3600  # the start of a UTC hour
    a = hasher.identities(event(base))
    assert a == hasher.identities(event(base + 3599))
    assert a.user == a.client and a.kind == SURROGATE
    assert session_of(a.kind, a.user, base) == session_of(a.kind, a.user, base + 3599)
    assert session_of(a.kind, a.user, base) != session_of(a.kind, a.user, base + 3600)
    assert session_of(a.kind, a.user, base) == a.user + f"{base // 3600 % 24:02d}"
    assert hasher.identities(event(base, ua="curl/8")).client != a.client
    assert Hasher("other salt").identities(event(base)).client != a.client


def test_a_logged_session_id_is_the_user_and_the_session() -> None:
    ids = Hasher("salt").identities(event(1_700_000_000, session="abc"))
    assert ids.kind == LOGGED and ids.user != ids.client
    assert session_of(ids.kind, ids.user, 0) == session_of(ids.kind, ids.user, 7200) == ids.user


def test_line_and_url_identities_are_salted_and_stable() -> None:
    a, b = Hasher("salt"), Hasher("salt")
    line = '192.0.2.1 - - [14/Oct/2026:10:00:00 +0000] "GET /1/ HTTP/1.1" 200 5 "-" "ua"'
    assert a.line_id(line) == b.line_id(line) != Hasher("pepper").line_id(line)
    assert a.line_id(line) != a.line_id(line + " ")
    assert len(a.line_id(line)) == 12
    assert a.url_key("https://r/1/") == b.url_key("https://r/1/") != a.url_key("https://r/2/")


def test_action_id_depends_on_item_chain_and_retained_time() -> None:
    ids = {action_id("1", "k:ab", 10), action_id("1", "k:ab", 11), action_id("2", "k:ab", 10),
           action_id("1", "k:ac", 10)}
    assert len(ids) == 4 and all(len(i) == 24 for i in ids)


def test_event_json_is_event_to_json_as_compact_json() -> None:
    tricky = UsageEvent(1_700_000_000, 'it"em\\1', None, MetricType.REQUEST,
                        "https://r.example/1/é.pdf?a=\"b\"", "2001:db8::1",
                        "Mozilla/5.0 \u2603\ttab", "https://ref.example/?q=\\x", 304,
                        session="s\u00e9ss", rule="download", line="0a1b2c3d4e5f")
    for e in (tricky, event(5), UsageEvent(1, "i", "oai:x:i", MetricType.INVESTIGATION, "u",
                                           "ip", "", "", 200, None, "")):
        text = event_json(e)
        assert json.loads(text) == event_to_json(e)
        assert event_from_json(json.loads(text)) == e
        assert text == json.dumps(event_to_json(e), separators=(",", ":"))
