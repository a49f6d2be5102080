"""The Pusher against a real HTTP gatherer on 127.0.0.1: outcomes, retries, profiles, methods.

Time is a fake clock handed to the Pusher (backoff, pauses, probes and leases all run on it);
the only real waiting is the gatherer's own scripted delays.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from lxml import etree

from pirus_bridge import keys
from pirus_bridge.circuit import Circuit
from pirus_bridge.config import Config, RetryConfig
from pirus_bridge.contextobject import CTX_NS
from pirus_bridge.outbox import Outbox
from pirus_bridge.pusher import Pusher, RateLimiter, RetryPolicy
from tests.delivery_support import (
    HOST,
    IRUS_KEYS,
    FakeClock,
    core,
    delivered_once,
    delivery_config,
    enqueue,
    event_key,
    ingest_lines,
    set_circuit,
)
from tests.gatherer import CLOSE, Gatherer, Reply
from tests.helpers import OTHER_PERSON, clf

MONTH = "2026-10"


@pytest.fixture
def gatherer() -> Iterator[Gatherer]:
    with Gatherer() as g:
        yield g


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Rig:
    """A config, an outbox and a pusher on the fake clock, for one gatherer."""

    def __init__(self, redis_url: str, r: redis.Redis, g: Gatherer, clock: FakeClock,
                 tmp_path: Path, **overrides: Any) -> None:
        self.r, self.g, self.clock, self.tmp_path = r, g, clock, tmp_path
        self.cfg: Config = delivery_config(redis_url, g.url, **overrides)
        self.box = Outbox(r, "irus")
        self.pusher = Pusher(self.cfg, r, self.cfg.gatherers["irus"], clock=clock)

    def enqueue(self, n: int, **kw: Any) -> None:
        enqueue(self.cfg, self.r, self.tmp_path, n, **kw)

    def push(self) -> dict[str, Any]:
        return self.pusher.push_once().to_json()

    def stats(self) -> dict[str, Any]:
        return self.box.stats(self.clock())

    def only_message(self) -> Any:
        ids = [i for state in ("pending", "inflight", "failed") for i, _ in self.box.ids(state)]
        assert len(ids) == 1, ids
        return self.box.get(ids[0])


@pytest.fixture
def rig_factory(
    redis_url: str, r: redis.Redis, gatherer: Gatherer, clock: FakeClock, tmp_path: Path
) -> Iterator[Any]:
    made: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        rig = Rig(redis_url, r, gatherer, clock, tmp_path, **overrides)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.pusher.close()


def test_pusher_delivers_each_event_once_with_the_irus_keys(
    rig_factory: Any, gatherer: Gatherer, r: redis.Redis, tmp_path: Path
) -> None:
    rig = rig_factory()
    rig.enqueue(40)  # downloads
    rig.enqueue(15, downloads=False, first_item=500)  # item page views
    referred = clf("02/Oct/2026:12:00:00 +0000", "/900/1/thesis.pdf", ip="2001:db8::7",
                   ua=OTHER_PERSON, ref="https://scholar.example.org/?q=a&b=c d")
    ingest_lines(rig.cfg, r, tmp_path / "one.log", [referred])
    result = rig.push()
    assert result["sent"] == 56 and result["retried"] == result["failed"] == 0
    assert delivered_once(gatherer, 56)
    for request in gatherer.requests:
        assert request.method == "GET" and request.path == "/counter/"
        assert list(request.query) == list(IRUS_KEYS)
        q = request.query
        assert q["url_ver"] == "Z39.88-2004"
        assert re.fullmatch(r"2026-10-02T\d\d:\d\d:\d\dZ", q["url_tim"])
        assert q["rfr_id"] == HOST
        item = q["rft.artnum"].rsplit(":", 1)[1]
        assert q["rft.artnum"] == f"oai:{HOST}:{item}"
        if q["rft_dat"] == "Request":
            assert q["svc_dat"].startswith(f"https://{HOST}/{item}/1/")
        else:
            assert q["rft_dat"] == "Investigation" and q["svc_dat"] == f"https://{HOST}/{item}/"
    metrics = [q.query["rft_dat"] for q in gatherer.requests]
    assert metrics.count("Investigation") == 15 and metrics.count("Request") == 41
    [special] = [q.query for q in gatherer.requests if q.query["req_id"] == "2001:db8::7"]
    assert special == {
        "url_ver": "Z39.88-2004", "url_tim": "2026-10-02T12:00:00Z", "req_id": "2001:db8::7",
        "req_dat": OTHER_PERSON, "rft.artnum": f"oai:{HOST}:900", "rfr_id": HOST,
        "rft_dat": "Request", "svc_dat": f"https://{HOST}/900/1/thesis.pdf",
        "rfr_dat": "https://scholar.example.org/?q=a&b=c d",
    }
    assert core(rig.stats()) == {"pending": 0, "in_flight": 0, "sent": 56, "failed": 0,
                                 "oldest_pending_age_s": 0.0}
    assert rig.box.month_counts(MONTH) == {"qualified": 56, "sent": 56, "failed": 0,
                                           "pending": 0}
    assert gatherer.connections <= rig.cfg.gatherers["irus"].concurrency  # keep-alive
    assert rig.push()["sent"] == 0 and gatherer.received == 56  # nothing sent twice


def test_pusher_retries_a_server_error_on_the_next_due_push(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    rig = rig_factory()
    rig.enqueue(1)
    gatherer.script([Reply(500, body="database is locked")])
    assert rig.push() | {"errors": {}} == {"sent": 0, "retried": 1, "failed": 0, "released": 0,
                                           "circuit": "closed", "paused_reason": None,
                                           "errors": {}}
    meta = rig.only_message().meta
    assert (meta.attempts, meta.last_status) == (1, 500)
    assert meta.last_error == "HTTP 500 Internal Server Error"
    assert meta.body_excerpt == "database is locked"
    assert meta.first_attempt == meta.last_attempt == clock()
    assert rig.push()["sent"] == 0  # not due yet: backoff
    assert gatherer.received == 1
    clock.advance(2.01)  # initial backoff 1 s + up to 1 s jitter
    assert rig.push()["sent"] == 1
    assert gatherer.received == 2
    assert rig.stats()["sent"] == 1 and rig.stats()["pending"] == 0


def test_pusher_honours_retry_after_without_using_an_attempt(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    rig = rig_factory(retry={"max_attempts": 1})
    rig.enqueue(1)
    gatherer.script([Reply(429, headers={"Retry-After": "30"}, body="slow down")])
    assert rig.push()["released"] == 1
    message = rig.only_message()
    assert message.meta.attempts == 0 and message.meta.last_status == 429
    assert rig.box.state_of(message.id) == ("pending", clock() + 30)
    paused = rig.box.circuit()
    assert paused.paused_until == clock() + 30
    clock.advance(29)
    assert rig.push()["sent"] == 0
    assert gatherer.received == 1  # held back: nothing sent before 30 s
    clock.advance(2)
    assert rig.push()["sent"] == 1  # max_attempts 1 and still delivered: 429 cost nothing
    assert gatherer.received == 2
    assert rig.stats()["failed"] == 0


def test_pusher_sends_a_client_error_to_the_failure_queue_then_retries_it(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    """A 404 for one message while the gatherer accepts the ones after it: that message is
    wrong in itself, so it goes to the failure queue with the status and a body excerpt."""
    rig = rig_factory(concurrency=1)
    rig.enqueue(3)
    gatherer.script([Reply(404, body="<html>No such tracker</html>" + "x" * 1000), 200, 200])
    assert rig.push()["failed"] == 1
    [(msg_id, failed_at)] = rig.box.ids("failed")
    assert failed_at == clock()
    meta = rig.box.get(msg_id).meta  # type: ignore[union-attr]
    assert meta.last_status == 404 and meta.attempts == 1
    assert meta.last_error.startswith("HTTP 404 ") and meta.last_error == "HTTP 404 Not Found"
    assert meta.body_excerpt.startswith("<html>No such tracker</html>")
    assert len(meta.body_excerpt) == 300
    assert rig.box.month_counts(MONTH) == {"qualified": 3, "sent": 2, "failed": 1, "pending": 0}
    clock.advance(3600)
    assert rig.push()["sent"] == 0  # failed messages stay failed until an admin acts

    assert rig.box.revive([msg_id], now=clock()) == 1  # `failed retry`
    assert rig.push()["sent"] == 1
    assert gatherer.received == 4
    assert rig.box.month_counts(MONTH) == {"qualified": 3, "sent": 3, "failed": 0, "pending": 0}
    assert rig.stats()["failed"] == 0


def test_pusher_holds_a_lone_refusal_until_the_gatherer_accepts_another(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    """One message refused with nothing else to compare: it may be the gatherer that is wrong,
    so the message is held (no attempt used); once the gatherer has accepted others after it,
    a second refusal sends it to the failure queue."""
    rig = rig_factory(concurrency=1)
    rig.enqueue(1)
    gatherer.script([Reply(400, body="bad request")])
    result = rig.push()
    assert (result["failed"], result["released"], result["circuit"]) == (0, 1, "closed")
    held = rig.only_message()
    assert held.meta.attempts == 0 and held.meta.last_status == 400
    assert rig.box.state_of(held.id) == ("pending", clock() + 60)  # the probe interval
    rig.enqueue(2, first_item=300)
    assert rig.push()["sent"] == 2
    clock.advance(60)
    gatherer.script([Reply(400, body="bad request")])
    assert rig.push()["failed"] == 1
    assert [i for i, _ in rig.box.ids("failed")] == [held.id]
    assert gatherer.received == 4


def test_pusher_retries_a_read_timeout(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    rig = rig_factory(read_timeout_s=0.3)
    rig.enqueue(1)
    gatherer.script([Reply(delay=1.0)])
    result = rig.push()
    assert result["retried"] == 1 and result["errors"] == {"read timeout after 0.3s": 1}
    assert rig.only_message().meta.last_status is None
    clock.advance(2.01)
    assert rig.push()["sent"] == 1
    assert rig.stats()["pending"] == rig.stats()["in_flight"] == 0


def test_pusher_retries_a_dropped_connection(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    rig = rig_factory()
    rig.enqueue(1)
    gatherer.script([CLOSE])
    assert rig.push()["retried"] == 1
    clock.advance(2.01)
    assert rig.push()["sent"] == 1


def test_pusher_gives_up_after_max_attempts(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    rig = rig_factory(retry={"max_attempts": 3, "initial_backoff_s": 1, "max_backoff_s": 5},
                      circuit={"failure_threshold": 100})
    rig.enqueue(2)
    gatherer.set_default(503, body="maintenance")
    totals = {"retried": 0, "failed": 0}
    for _ in range(10):
        result = rig.push()
        totals["retried"] += result["retried"]
        totals["failed"] += result["failed"]
        clock.advance(6)
    assert totals == {"retried": 4, "failed": 2}
    assert gatherer.received == 6  # exactly max_attempts each
    failed = rig.box.messages(i for i, _ in rig.box.ids("failed"))
    assert len(failed) == 2
    assert all(m.meta.attempts == 3 and m.meta.last_status == 503 for m in failed.values())
    assert rig.box.month_counts(MONTH) == {"qualified": 2, "sent": 0, "failed": 2, "pending": 0}


def test_pusher_one_bad_message_does_not_pause_the_gatherer(
    rig_factory: Any, gatherer: Gatherer
) -> None:
    """A 5xx for one message while others get through is that message's problem: it is
    retried, and the circuit stays closed."""
    rig = rig_factory(concurrency=1, circuit={"failure_threshold": 1})
    rig.enqueue(5)
    gatherer.script([500])
    result = rig.push()
    assert (result["sent"], result["retried"], result["circuit"]) == (4, 1, "closed")


def test_pusher_ctx_xml_posts_context_object_batches(
    rig_factory: Any, gatherer: Gatherer
) -> None:
    rig = rig_factory(profile="ctx-xml", batch_size=10)
    rig.enqueue(25)
    assert rig.push()["sent"] == 25
    assert gatherer.received == 3  # 10 + 10 + 5
    timestamps: list[str] = []
    referred = 0
    for request in gatherer.requests:
        assert request.method == "POST" and request.path == "/counter/"
        assert request.headers["Content-Type"].startswith("application/xml")
        doc = etree.fromstring(request.body)
        assert doc.tag == f"{{{CTX_NS}}}context-objects"
        objects = doc.findall(f"{{{CTX_NS}}}context-object")
        assert 1 <= len(objects) <= 10
        for ctx in objects:
            timestamps.append(ctx.get("timestamp", ""))
            for part in ("referent", "requester", "service-type", "resolver"):
                assert ctx.find(f"{{{CTX_NS}}}{part}") is not None, part
            ids = ctx.findall(f"{{{CTX_NS}}}referent/{{{CTX_NS}}}identifier")
            assert ids[0].text.startswith(f"oai:{HOST}:")  # type: ignore[union-attr]
            if ctx.find(f"{{{CTX_NS}}}referring-entity") is not None:
                referred += 1
    assert len(timestamps) == 25 and len(set(timestamps)) == 25
    assert referred == 12  # only events with a Referer have a referring-entity


def test_pusher_ctx_xml_batch_failure_retries_the_whole_batch(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    rig = rig_factory(profile="ctx-xml")
    rig.enqueue(5)
    gatherer.script([503])
    assert rig.push()["retried"] == 5
    clock.advance(2.01)
    assert rig.push()["sent"] == 5
    assert gatherer.received == 2


@pytest.mark.parametrize("method", ["HEAD", "POST"])
def test_pusher_sends_with_the_configured_method(
    rig_factory: Any, gatherer: Gatherer, method: str
) -> None:
    rig = rig_factory(method=method)
    rig.enqueue(3)
    assert rig.push()["sent"] == 3
    events = set()
    for request in gatherer.requests:
        assert request.method == method and request.path == "/counter/"
        kev = request.query if method == "HEAD" else request.form
        assert list(kev) == list(IRUS_KEYS)
        events.add(event_key(kev))
        if method == "POST":
            assert request.query == {}
            assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert len(events) == 3


def test_pusher_applies_the_gatherers_field_overrides(
    rig_factory: Any, gatherer: Gatherer
) -> None:
    rig = rig_factory(fields={"rfr_dat": None, "rfr_id": "repo.example.org",
                              "svc_format": "{mime_type}", "x_item": "item-{item}"})
    rig.enqueue(2)
    assert rig.push()["sent"] == 2
    for request in gatherer.requests:
        q = request.query
        assert "rfr_dat" not in q
        assert q["rfr_id"] == "repo.example.org"
        assert q["svc_format"] == "application/pdf"
        assert q["x_item"] == "item-" + q["rft.artnum"].rsplit(":", 1)[1]
        assert list(q)[-2:] == ["svc_format", "x_item"]


@pytest.mark.parametrize(
    ("settings", "req_id", "rfr_dat"),
    [
        ({}, "198.18.0.{n}", ["", "https://www.example.org/search?q=x"]),
        ({"req_id_form": "urn"}, "urn:ip:198.18.0.{n}", ["", "https://www.example.org/search?q=x"]),
        ({"send_empty_rfr_dat": False}, "198.18.0.{n}", [None, "https://www.example.org/search?q=x"]),
        ({"profile": "pirus2-legacy", "req_id_form": "bare"}, "198.18.0.{n}", [None, None]),
        ({"anonymize_ip": 1}, "198.18.0.0", ["", "https://www.example.org/search?q=x"]),
    ],
)
def test_pusher_req_id_form_empty_rfr_dat_and_truncated_addresses(
    rig_factory: Any, gatherer: Gatherer, settings: dict[str, Any], req_id: str,
    rfr_dat: list[str | None],
) -> None:
    rig = rig_factory(concurrency=1, **settings)
    rig.enqueue(2)  # the first without a Referer, the second with one
    assert rig.push()["sent"] == 2
    by_client = sorted(gatherer.requests, key=lambda q: q.query["req_dat"])
    assert [q.query["req_id"] for q in by_client] == [req_id.format(n=n) for n in (1, 2)]
    assert [q.query.get("rfr_dat") for q in by_client] == rfr_dat


def test_pusher_render_is_the_request_sent(rig_factory: Any, gatherer: Gatherer) -> None:
    rig = rig_factory()
    rig.enqueue(1)
    message = rig.only_message()
    request = rig.pusher.render(message.event)
    assert request["method"] == "GET" and request["url"].startswith(gatherer.url + "?")
    rig.push()
    [received] = gatherer.requests
    assert dict(parse_qsl(urlsplit(request["url"]).query, keep_blank_values=True)) == \
        received.query


def test_pusher_does_not_send_disabled_metrics(
    redis_url: str, r: redis.Redis, gatherer: Gatherer, clock: FakeClock, tmp_path: Path
) -> None:
    """A gatherer taking only Requests (the default) is sent no views."""
    cfg = delivery_config(redis_url, gatherer.url, metrics=["request"])
    lines = [clf("02/Oct/2026:10:00:00 +0000", "/7/"),
             clf("02/Oct/2026:10:00:05 +0000", "/7/1/a.pdf")]
    assert ingest_lines(cfg, r, tmp_path / "a.log", lines).enqueued == {"irus": 1}
    pusher = Pusher(cfg, r, cfg.gatherers["irus"], clock=clock)
    try:
        assert pusher.push_once().sent == 1
    finally:
        pusher.close()
    assert [q.query["rft_dat"] for q in gatherer.requests] == ["Request"]


def _push_in_thread(rig: Rig, timeout: float = 5.0) -> dict[str, Any]:
    """push_once with a watchdog: a pass that never ends is stopped and reported."""
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(rig.push()))
    t.start()
    t.join(timeout)
    if t.is_alive():
        rig.pusher.stopping.set()
        t.join(10)
        pytest.fail(f"push_once did not return within {timeout}s")
    return out


def test_pusher_pass_ends_when_the_gatherer_keeps_answering_429(
    rig_factory: Any, gatherer: Gatherer
) -> None:
    """``Retry-After: 0`` forever must not spin one pass: it ends, the message waits."""
    rig = rig_factory()
    rig.enqueue(3)
    gatherer.set_default(429, headers={"Retry-After": "0"})
    result = _push_in_thread(rig)
    assert result["sent"] == 0 and result["released"] >= 1
    assert gatherer.received <= 3
    assert rig.stats()["pending"] == 3 and rig.stats()["in_flight"] == 0


def test_pusher_pass_ends_when_probing_with_no_interval(
    rig_factory: Any, gatherer: Gatherer
) -> None:
    rig = rig_factory(circuit={"failure_threshold": 1, "probe_interval_s": 0})
    rig.enqueue(3)
    gatherer.stop()
    result = _push_in_thread(rig)
    assert result["circuit"] == "open" and result["sent"] == 0
    assert rig.stats()["pending"] == 3


# -- pure parts --------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_rate_limiter_spaces_calls_evenly() -> None:
    t = FakeTime()
    limiter = RateLimiter(10, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        limiter.acquire()
    assert t.slept == [0.1, 0.1, 0.1, 0.1]  # the first goes at once
    t.now += 5  # idle for a while: no burst is saved up beyond one slot
    limiter.acquire()
    limiter.acquire()
    assert t.slept == [0.1] * 5


def test_rate_limiter_zero_means_unlimited() -> None:
    t = FakeTime()
    limiter = RateLimiter(0, clock=t.clock, sleep=t.sleep)
    for _ in range(100):
        limiter.acquire()
    assert t.slept == []


def test_pusher_uses_the_configured_rate_limit(rig_factory: Any) -> None:
    rig = rig_factory(rate_limit_per_s=4)
    assert rig.pusher.limiter.interval == 0.25


@pytest.mark.parametrize(
    ("initial", "maximum", "attempt", "low", "high"),
    [
        (60, 21600, 1, 60, 120),
        (60, 21600, 2, 120, 180),
        (60, 21600, 5, 960, 1020),
        (60, 21600, 12, 21600, 21600),
        (1, 60, 1, 1, 2),
        (0, 60, 3, 0, 0),
    ],
)
def test_retry_policy_backs_off_exponentially_with_jitter(
    initial: float, maximum: float, attempt: int, low: float, high: float
) -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=12, initial_backoff_s=initial,
                                     max_backoff_s=maximum))
    delays = [policy.delay(attempt) for _ in range(50)]
    assert all(low <= d <= high for d in delays)


# -- one message at a time, the next rendered while the gatherer answers ----------------------


def _ids_by_event(rig: Rig) -> dict[Any, str]:
    """Message id per event as the gatherer will see it (the claim order is Redis's)."""
    ids = [i for i, _ in rig.box.ids("pending", 1000)]
    by_event = {}
    for msg_id, message in rig.box.messages(ids).items():
        url = rig.pusher.render(message.event)["url"]
        by_event[event_key(dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)))] = msg_id
    return by_event


def test_pusher_in_turn_each_outcome_is_its_own_messages(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    """With concurrency 1 a batch goes out one request at a time while the next message is
    rendered: every answer must land on the message it answered."""
    rig = rig_factory(concurrency=1)
    rig.enqueue(6)
    by_event = _ids_by_event(rig)
    # The 4th request finds its kept-alive connection closed before any answer: it goes once
    # more, on a new connection, and gets the next reply.
    gatherer.script([200, Reply(500, body="oops"), Reply(404, body="gone"), CLOSE, 200, 503])
    result = rig.push()
    assert (result["sent"], result["retried"], result["failed"]) == (3, 2, 1)
    order = [by_event[event_key(q.query)] for q in gatherer.requests]
    assert len(order) == 7 and order[3] == order[4]
    first, server_error, gone, dropped, unavailable, last = (order[i] for i in (0, 1, 2, 3, 5, 6))
    assert len({first, server_error, gone, dropped, unavailable, last}) == 6
    assert {i for i, _ in rig.box.ids("sent")} == {first, dropped, last}
    assert [i for i, _ in rig.box.ids("failed")] == [gone]
    assert rig.box.get(gone).meta.body_excerpt == "gone"  # type: ignore[union-attr]
    retried = {i: rig.box.get(i).meta for i, _ in rig.box.ids("pending")}  # type: ignore[union-attr]
    assert {i: (m.attempts, m.last_status) for i, m in retried.items()} == {
        server_error: (1, 500), unavailable: (1, 503)}
    assert retried[server_error].body_excerpt == "oops"
    assert result["circuit"] == "closed"


def test_pusher_in_turn_a_message_that_cannot_be_rendered_costs_no_other(
    rig_factory: Any, gatherer: Gatherer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(concurrency=1)
    rig.enqueue(4)
    render = rig.pusher.render
    calls = []

    def flaky_render(event: Any) -> dict[str, Any]:
        calls.append(event)
        if len(calls) == 2:
            raise RuntimeError("template bug")
        return render(event)

    monkeypatch.setattr(rig.pusher, "render", flaky_render)
    result = rig.push()
    assert (result["sent"], result["retried"]) == (3, 1)
    assert result["errors"] == {"internal error: template bug": 1}
    assert gatherer.received == 3


def test_pusher_in_turn_a_corrupt_message_goes_to_the_failure_queue(
    rig_factory: Any, gatherer: Gatherer, r: redis.Redis
) -> None:
    rig = rig_factory(concurrency=1)
    rig.enqueue(3)
    corrupt = rig.box.ids("pending")[1][0]
    r.hset(rig.box.keys["msg"], corrupt, "{}")
    result = rig.push()
    assert (result["sent"], result["failed"]) == (2, 1)
    assert [i for i, _ in rig.box.ids("failed")] == [corrupt]
    assert gatherer.received == 2


def test_pusher_reads_a_batchs_item_metadata_in_one_pipeline(
    rig_factory: Any, gatherer: Gatherer, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(concurrency=1, profile="pirus2-legacy")
    rig.enqueue(7)  # items 100 … 106
    r.hset(keys.metadata("100"), "json", json.dumps({"doi": "10.1234/a", "mime_type": "x/y"}))

    def one_by_one(*args: Any) -> None:
        raise AssertionError("metadata fetched one item per round trip")

    monkeypatch.setattr(rig.pusher.r, "hget", one_by_one)
    assert rig.push()["sent"] == 7
    with_doi = [q.query for q in gatherer.requests if "rft_id" in q.query]
    assert [(q["rft_id"], q["svc_format"]) for q in with_doi] == [("info:doi:10.1234/a", "x/y")]
    others = [q.query for q in gatherer.requests if "rft_id" not in q.query]
    assert len(others) == 6 and all(q["rft.artnum"].startswith("oai:") for q in others)


def test_pusher_obeys_a_circuit_opened_by_another_pusher(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    """The circuit lives in Redis: what one pusher decided, the claims of every other obey."""
    rig = rig_factory()
    rig.enqueue(3)
    set_circuit(rig.r, "irus", Circuit(state="open", why="down", reason="5 calls failed",
                                       failures=5, next_probe=clock() + 60))
    assert rig.push() | {"errors": {}} == {"sent": 0, "retried": 0, "failed": 0, "released": 0,
                                           "circuit": "open",
                                           "paused_reason": "down: 5 calls failed",
                                           "errors": {}}
    assert gatherer.received == 0 and rig.stats()["in_flight"] == 0
    clock.advance(60)  # a probe is due: one message, then the rest once it got through
    result = rig.push()
    assert (result["sent"], result["circuit"]) == (3, "closed")
    set_circuit(rig.r, "irus", Circuit(paused_until=clock() + 30))
    rig.enqueue(2, first_item=300)
    assert rig.push()["sent"] == 0
    clock.advance(31)
    assert rig.push()["sent"] == 2


def test_pusher_starts_no_exchange_its_lease_could_not_cover(
    rig_factory: Any, gatherer: Gatherer, clock: FakeClock
) -> None:
    """A slow gatherer (here: the clock moves 3 s per look) must not keep a message past its
    lease, when another pusher may claim it: what is left when an exchange would end too
    close to the lease's end goes back to pending, unsent and with no attempt used."""
    rig = rig_factory(concurrency=1, lease_s=20, deadline_s=2.0)
    rig.enqueue(10)
    started = clock()
    rig.pusher.clock = lambda: clock.advance(3)  # each look at the clock: 3 s later
    first = rig.pusher.push_once(max_seconds=1)  # one batch, then the pass ends
    # Claimed at +3, lease until +23; an exchange may start while now + 2 + 4 <= +23.
    sent_at = [q.time for q in gatherer.requests]
    assert first.sent == len(sent_at) and 0 < first.sent < 10
    assert first.released >= 1 and first.failed == first.retried == 0
    pending = rig.box.messages(i for i, _ in rig.box.ids("pending"))
    assert len(pending) + first.sent == 10
    assert all(m.meta.attempts == 0 and m.meta.last_attempt is None for m in pending.values())
    assert clock() > started
    rig.pusher.clock = clock
    assert rig.push()["sent"] == len(pending)  # a new claim, a new lease: the rest goes
    assert delivered_once(gatherer, 10)
