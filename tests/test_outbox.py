"""The outbox in a real Redis: atomic claims, leases, settling, audit, revive/purge, privacy.

Messages are enqueued through the real counting path (a small ingested log); time is passed in
explicitly, so nothing here sleeps.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from pirus_bridge import keys
from pirus_bridge.circuit import Circuit
from pirus_bridge.config import Config
from pirus_bridge.counter import event_to_json
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.outbox import Claim, DeliveryMeta, Message, Outbox, message_json
from tests.delivery_support import (
    SPEC_STATS_KEYS,
    core,
    delivery_config,
    enqueue,
    outbox_dump,
    set_circuit,
    usage_lines,
)

URL = "http://127.0.0.1:9/counter/"  # never contacted here
MONTH = "2026-10"


@pytest.fixture
def cfg(redis_url: str) -> Config:
    return delivery_config(redis_url, URL)


@pytest.fixture
def box(r: redis.Redis) -> Outbox:
    return Outbox(r, "irus")


def settle(box: Outbox, action: str, message: Message, now: float, due: float = 0.0,
           meta: DeliveryMeta | None = None) -> int:
    pipe = box.r.pipeline(transaction=False)
    box.settle(pipe, action, message, now=now, due=due, meta=meta)
    return int(pipe.execute()[0][0])  # one outcome per script call here


def later() -> float:
    """A moment when everything just enqueued (due at enqueue time) is due."""
    return time.time() + 1


def test_outbox_enqueue_puts_each_event_in_pending(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 12)
    assert box.stats(later())["pending"] == 12
    assert box.month_counts(MONTH) == {"qualified": 12, "sent": 0, "failed": 0, "pending": 12}
    ids = [i for i, _ in box.ids("pending", 100)]
    messages = box.messages(ids)
    assert len(messages) == 12
    assert all(m.event is not None and m.month == MONTH for m in messages.values())


def test_outbox_enqueue_is_idempotent(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    """The same events from another file (a renamed copy, say) get the same ids: no new
    messages, nothing counted as qualified twice."""
    enqueue(cfg, r, tmp_path, 6)
    from tests.delivery_support import ingest_lines

    again = ingest_lines(cfg, r, tmp_path / "copy.log", usage_lines(6))
    assert again.enqueued == {"irus": 0}
    assert box.month_counts(MONTH)["qualified"] == 6
    assert box.stats(later())["pending"] == 6


def test_outbox_claim_leases_only_due_messages(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 5)
    assert box.claim(10, 60, now=time.time() - 3600) == []
    now = later()
    claimed = box.claim(3, 60, now=now)
    assert len(claimed) == 3
    assert all(m.event is not None and m.meta.attempts == 0 for m in claimed)
    assert core(box.stats(now)) | {"oldest_pending_age_s": 0} == {
        "pending": 2, "in_flight": 3, "sent": 0, "failed": 0, "oldest_pending_age_s": 0
    }
    assert {i for i, _ in box.ids("inflight")} == {m.id for m in claimed}
    assert all(score == now + 60 for _, score in box.ids("inflight"))


def test_outbox_two_claimers_never_get_the_same_message(
    cfg: Config, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 300)
    now = later()
    got: list[list[str]] = [[] for _ in range(4)]

    def claimer(n: int) -> None:
        client = redis.Redis.from_url(redis_url)
        mine = Outbox(client, "irus")
        while batch := mine.claim(7, 600, now=now):
            got[n] += [m.id for m in batch]
        client.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    everything = [i for ids in got for i in ids]
    assert len(everything) == 300
    assert len(set(everything)) == 300
    assert sum(1 for ids in got if ids) > 1, "the claimers did not run side by side"


def test_outbox_expired_lease_comes_back_with_its_history(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 4)
    t0 = later()
    first = box.claim(10, 30, now=t0)
    assert len(first) == 4
    # One message had failed once before: its history travels with it.
    settle(box, "retry", first[0], t0, due=t0, meta=DeliveryMeta(attempts=1, last_status=503))
    again = box.claim(10, 30, now=t0)
    assert [m.id for m in again] == [first[0].id]
    assert box.claim(10, 30, now=t0 + 29) == []  # leases still held
    back = box.claim(10, 30, now=t0 + 31)  # every lease ran out: the pusher died
    assert {m.id for m in back} == {m.id for m in first}
    history = {m.id: m.meta for m in back}[first[0].id]
    assert (history.attempts, history.last_status) == (1, 503)


@pytest.mark.parametrize(
    ("action", "state", "counts"),
    [
        ("sent", "sent", {"qualified": 3, "sent": 1, "failed": 0, "pending": 2}),
        ("retry", "pending", {"qualified": 3, "sent": 0, "failed": 0, "pending": 3}),
        ("release", "pending", {"qualified": 3, "sent": 0, "failed": 0, "pending": 3}),
        ("fail", "failed", {"qualified": 3, "sent": 0, "failed": 1, "pending": 2}),
    ],
)
def test_outbox_settle_moves_a_message(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path, action: str, state: str,
    counts: dict[str, int],
) -> None:
    enqueue(cfg, r, tmp_path, 3)
    t0 = later()
    message = box.claim(1, 60, now=t0)[0]
    meta = DeliveryMeta(attempts=2, first_attempt=t0 - 5, last_attempt=t0, last_status=503,
                        last_error="HTTP 503 Service Unavailable", body_excerpt="busy")
    assert settle(box, action, message, t0, due=t0 + 100, meta=meta) == 1
    found = box.state_of(message.id)
    assert found is not None and found[0] == state
    assert found[1] == (t0 + 100 if state == "pending" else t0)
    assert box.month_counts(MONTH) == counts
    assert box.stats(t0)["in_flight"] == 0
    stored = box.get(message.id)
    if action == "sent":
        assert stored is None  # the event is dropped once delivered
        assert r.hget(box.keys["meta"], message.id) is None
    else:
        assert stored is not None and stored.meta == meta
    # Settling twice is a no-op: the lease is gone.
    assert settle(box, action, message, t0 + 1, due=t0 + 200, meta=meta) == 0
    assert box.month_counts(MONTH) == counts


def test_outbox_late_sent_after_reclaim_does_not_double_count(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    """Pusher A's lease runs out mid-send, pusher B reclaims and sends too: one delivery is
    counted, and neither pusher can send it again."""
    enqueue(cfg, r, tmp_path, 1)
    t0 = later()
    a = box.claim(1, 10, now=t0)[0]
    b = box.claim(1, 10, now=t0 + 11)[0]
    assert a.id == b.id
    assert settle(box, "sent", a, t0 + 12) == 1
    assert settle(box, "sent", b, t0 + 13) == 0
    assert box.claim(1, 10, now=t0 + 100) == []
    assert box.month_counts(MONTH) == {"qualified": 1, "sent": 1, "failed": 0, "pending": 0}
    assert core(box.stats(t0 + 100)) == {"pending": 0, "in_flight": 0, "sent": 1, "failed": 0,
                                         "oldest_pending_age_s": 0.0}


def test_outbox_late_failure_then_delivery_elsewhere_counts_as_sent(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    """A gives up on a message after its lease ran out and B reclaimed it; B then delivers it.
    The message is sent, not also failed (reconcile must still add up)."""
    enqueue(cfg, r, tmp_path, 1)
    t0 = later()
    a = box.claim(1, 10, now=t0)[0]
    b = box.claim(1, 10, now=t0 + 11)[0]
    settle(box, "fail", a, t0 + 12, meta=DeliveryMeta(attempts=5))
    assert settle(box, "sent", b, t0 + 13) == 1
    assert box.month_counts(MONTH) == {"qualified": 1, "sent": 1, "failed": 0, "pending": 0}
    assert box.state_of(a.id) == ("sent", t0 + 13)
    assert box.stats(t0 + 13)["failed"] == 0


def test_outbox_stats_shape_and_oldest_pending_age(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 3)
    enqueued = min(json.loads(body)["q"] for body in r.hvals(keys.outbox("irus", "msg")))
    stats = box.stats(enqueued + 90)
    assert list(stats) == [*SPEC_STATS_KEYS, "waiting", "next_due_in_s", "retrying", "circuit",
                           "paused_reason", "paused_for_s"]
    assert stats["pending"] == 3 and stats["oldest_pending_age_s"] == 90.0
    assert stats["waiting"] == 0 and stats["next_due_in_s"] is None and stats["retrying"] == 0
    assert Outbox(r, "nobody").stats() == {
        "pending": 0, "in_flight": 0, "sent": 0, "failed": 0, "oldest_pending_age_s": 0.0,
        "waiting": 0, "next_due_in_s": None, "retrying": 0, "circuit": "closed",
        "paused_reason": None, "paused_for_s": 0.0,
    }


def test_outbox_backlog_age_counts_from_enqueue_through_backoff(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    """A message in backoff is due in the future; its age still counts from its enqueue."""
    enqueue(cfg, r, tmp_path, 2)
    due = box.ids("pending", 1)[0][1]
    enqueued = min(json.loads(body)["q"] for body in r.hvals(keys.outbox("irus", "msg")))
    t0 = due + 5
    first, second = box.claim(2, 60, now=t0)
    settle(box, "retry", first, t0, due=t0 + 3600, meta=DeliveryMeta(attempts=1))
    settle(box, "sent", second, t0)
    stats = box.stats(t0 + 600)
    assert stats["pending"] == 1 and stats["waiting"] == 1 and stats["retrying"] == 1
    assert stats["oldest_pending_age_s"] == round(t0 + 600 - enqueued, 1)  # not 0
    assert stats["next_due_in_s"] == 3000.0
    again = box.claim(1, 60, now=t0 + 3600)[0]  # still retrying while in flight
    assert box.stats(t0 + 3601)["retrying"] == 1
    assert box.stats(t0 + 3601)["oldest_pending_age_s"] == round(t0 + 3601 - enqueued, 1)
    settle(box, "sent", again, t0 + 3601)
    assert box.stats(t0 + 3602)["retrying"] == 0 and r.zcard(box.keys["retry"]) == 0


def test_outbox_enqueue_time_in_the_body_is_used(r: redis.Redis, box: Outbox) -> None:
    """The counting script may give a fresh message a hold (a due time a little ahead) and
    write its enqueue time as ``q``: the backlog's age counts from ``q``."""
    event = UsageEvent(1_792_000_000, "7", "oai:x:7", MetricType.REQUEST, "https://x/7/a.pdf",
                       "192.0.2.1", "Mozilla", "-", 200)
    body = message_json(event, enqueued=1000.0)
    assert json.loads(body)["q"] == 1000
    r.hset(box.keys["msg"], "m1", body)
    r.zadd(box.keys["pending"], {"m1": 1060.0})  # held for a minute
    assert box.stats(1030)["oldest_pending_age_s"] == 30.0
    [claimed] = box.claim(1, 60, now=1100)
    assert claimed.enqueued == 1000.0 and claimed.due == 1060.0


def test_outbox_retry_entries_of_messages_gone_another_way_are_dropped(
    r: redis.Redis, box: Outbox
) -> None:
    """The counting script may retract a pending message (a later click superseded it) without
    knowing ob:{g}:retry: the stale entry neither ages the backlog nor stays."""
    event = UsageEvent(1_792_000_000, "7", "oai:x:7", MetricType.REQUEST, "https://x/7/a.pdf",
                       "192.0.2.1", "Mozilla", "-", 200)
    r.hset(box.keys["msg"], mapping={"old": message_json(event), "new": message_json(event)})
    r.zadd(box.keys["pending"], {"old": 10.0, "new": 500.0})
    r.zadd(box.keys["retry"], {"old": 5.0})
    r.zrem(box.keys["pending"], "old")  # retracted
    r.hdel(box.keys["msg"], "old")
    assert box.stats(600)["oldest_pending_age_s"] == 100.0
    assert r.zcard(box.keys["retry"]) == 0


def test_outbox_stats_show_a_pause_and_its_reason(r: redis.Redis, box: Outbox) -> None:
    set_circuit(r, "irus", Circuit(state="open", why="misconfigured",
                                   reason="every message refused: HTTP 401", next_probe=160.0))
    stats = box.stats(100)
    assert stats["circuit"] == "open" and stats["paused_for_s"] == 60.0
    assert stats["paused_reason"] == "misconfigured: every message refused: HTTP 401"
    set_circuit(r, "irus", Circuit(paused_until=130.0))
    stats = box.stats(100)
    assert stats["circuit"] == "closed" and stats["paused_for_s"] == 30.0
    assert stats["paused_reason"] == "the gatherer asked for a pause (HTTP 429 Retry-After 30s)"


def test_outbox_revive_and_purge_failed_messages(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 3)
    t0 = later()
    batch = box.claim(3, 60, now=t0)
    for m in batch:
        settle(box, "fail", m, t0, meta=DeliveryMeta(attempts=12, last_status=404))
    assert box.stats(t0)["failed"] == 3
    assert box.failed_ids(older_than_s=3600, now=t0 + 60) == []
    assert set(box.failed_ids(older_than_s=30, now=t0 + 60)) == {m.id for m in batch}

    r.zadd(box.keys["retry"], {batch[0].id: t0 - 100, batch[1].id: t0 - 100})
    assert box.revive([batch[0].id, "no-such-id"], now=t0 + 60) == 1
    assert box.state_of(batch[0].id) == ("pending", t0 + 60)
    revived = box.claim(1, 60, now=t0 + 60)[0]
    assert revived.id == batch[0].id and revived.meta.attempts == 0  # a fresh attempt count
    assert box.month_counts(MONTH) == {"qualified": 3, "sent": 0, "failed": 2, "pending": 1}

    assert box.purge([batch[1].id]) == 1
    assert box.purge([batch[1].id]) == 0
    assert r.zcard(box.keys["retry"]) == 0  # a revived message ages from now
    assert box.get(batch[1].id) is None and box.state_of(batch[1].id) is None
    assert box.revive([batch[1].id]) == 0  # purged for good
    # Purged messages stay counted as failed: the month still adds up.
    assert box.month_counts(MONTH)["failed"] == 2
    assert box.stats(t0)["failed"] == 1


def test_outbox_sent_messages_keep_an_audit_record_for_the_audit_period(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    """What was delivered stays auditable (item, OAI identifier, metric, event time; no
    identity) as long as its id stays in ``sent``; trimming keeps the monthly counts."""
    enqueue(cfg, r, tmp_path, 2)
    t0 = later()
    first, second = box.claim(2, 60, now=t0)
    settle(box, "sent", first, t0)
    settle(box, "sent", second, t0 + 500)
    audit = box.audit([first.id, second.id, "unknown"])
    assert set(audit) == {first.id, second.id}
    assert first.event is not None
    assert audit[first.id] == {"i": first.event.item, "o": first.event.oai_identifier,
                               "m": "R", "t": first.event.ts}
    assert first.event.ip not in json.dumps(audit) and "Mozilla" not in json.dumps(audit)
    assert box.trim_sent(1000, now=t0 + 900) == 0
    assert box.trim_sent(1000, now=t0 + 1200) == 1
    assert [i for i, _ in box.ids("sent")] == [second.id]
    assert set(box.audit([first.id, second.id])) == {second.id}
    assert box.month_counts(MONTH)["sent"] == 2
    assert box.stats(t0)["sent"] == 2


def test_outbox_keeps_no_personal_data_once_delivered(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 20)
    before = outbox_dump(r)
    assert "198.18.0.1" in before and "Firefox" in before  # kept until delivered …
    t0 = later()
    first = box.claim(20, 60, now=t0)
    for m in first[:5]:  # some need a second try, with a delivery history on the way
        settle(box, "retry", m, t0, due=t0 + 10, meta=DeliveryMeta(attempts=1, last_status=503))
    for m in first[5:]:
        settle(box, "sent", m, t0)
    for m in box.claim(20, 60, now=t0 + 10):
        settle(box, "sent", m, t0 + 10)
    assert box.month_counts(MONTH)["sent"] == 20
    after = outbox_dump(r)
    assert "198.18." not in after  # … and gone after: no IP, no User-Agent
    assert "Firefox" not in after and "Mozilla" not in after
    assert r.hlen(box.keys["msg"]) == 0 and r.hlen(box.keys["meta"]) == 0


def test_message_parse_reads_compact_and_earlier_bodies() -> None:
    """Bodies are compact JSON now; ones enqueued by earlier versions are still delivered."""
    event = UsageEvent(1_792_000_000, "1234", "oai:x:1234", MetricType.REQUEST,
                       "https://x/1234/1/a b.pdf", "2001:db8::1", "Mözilla \"5\"", "-", 200,
                       "abc", "download")
    body = message_json(event)
    assert set(json.loads(body)) == {"t", "i", "o", "m", "u", "ip", "ua", "r"}
    assert Message.parse("irus", "m1", body).queued is None
    compact = Message.parse("irus", "m1", body.encode())
    # what delivery needs survives; status, session and mapping rule are not kept
    assert compact.event == replace(event, status=0, session=None, rule="")
    assert compact.month == "2026-10"
    earlier = json.dumps({"event": event_to_json(event), "month": "2026-10"})
    assert Message.parse("irus", "m1", earlier).event == event
    assert Message.parse("irus", "m1", earlier).month == "2026-10"
    no_oai = Message.parse("irus", "m2", message_json(replace(event, oai_identifier=None)))
    assert no_oai.event is not None and no_oai.event.oai_identifier is None


# -- claims queued on a pipeline, obeying the circuit breaker ---------------------------------


def claim_on(box: Outbox, limit: int, now: float, lease_s: float = 60) -> Claim:
    pipe = box.r.pipeline(transaction=False)
    box.claim_on(pipe, limit, lease_s, now)
    return box.claimed(pipe.execute()[-1])


@pytest.mark.parametrize(
    ("circuit", "leased"),
    [
        ({}, 4),  # never paused: no circuit hash at all
        ({"state": "closed", "failures": "2", "next_probe": "0", "paused_until": "0"}, 4),
        ({"state": "closed", "paused_until": "+100"}, 0),  # a 429's Retry-After is running
        ({"state": "closed", "paused_until": "-1"}, 4),  # … and is over
        ({"state": "open", "next_probe": "+30"}, 0),  # down, no probe due yet
        ({"state": "open", "next_probe": "-1"}, 1),  # down, a probe is due: one message
        ({"state": "open", "next_probe": "-1", "paused_until": "+5"}, 0),
    ],
)
def test_outbox_claim_on_obeys_the_circuit(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path, circuit: dict[str, str],
    leased: int,
) -> None:
    enqueue(cfg, r, tmp_path, 6)
    now = later()
    fields = {k: str(now + float(v)) if v[:1] in "+-" else v for k, v in circuit.items()}
    if fields:
        r.hset(box.keys["circuit"], mapping=fields)
    claim = claim_on(box, 4, now)
    assert len(claim.messages) == leased
    assert Circuit.from_fields(fields).claim_limit(now, 4) == leased  # the rule's statement
    assert claim.circuit == fields
    assert box.stats(now)["in_flight"] == leased
    assert all(m.event is not None for m in claim.messages)


def test_outbox_claim_on_settles_and_claims_in_one_round_trip(
    cfg: Config, r: redis.Redis, box: Outbox, tmp_path: Path
) -> None:
    enqueue(cfg, r, tmp_path, 5)
    t0 = later()
    first = claim_on(box, 2, t0).messages
    pipe = r.pipeline(transaction=False)
    box.settle_many(pipe, [("sent", m, 0.0, None) for m in first], now=t0)
    box.claim_on(pipe, 10, 60, t0)
    applied, reply = pipe.execute()
    assert applied == [1, 1]
    rest = box.claimed(reply).messages
    assert len(rest) == 3 and not {m.id for m in rest} & {m.id for m in first}
    assert box.month_counts(MONTH)["sent"] == 2


def test_outbox_claim_of_thousands_and_missing_bodies(r: redis.Redis, box: Outbox) -> None:
    """A claim bigger than Lua can unpack in one call; ids whose body is gone are dropped."""
    event = UsageEvent(1_792_000_000, "7", "oai:x:7", MetricType.REQUEST, "https://x/7/a.pdf",
                       "192.0.2.1", "Mozilla", "-", 200)
    ids = [f"m{i:05d}" for i in range(2500)]
    pipe = r.pipeline(transaction=False)
    pipe.hset(box.keys["msg"], mapping={i: message_json(event) for i in ids if i != "m01234"})
    pipe.hset(box.keys["meta"], "m00007", DeliveryMeta(attempts=3).to_json())
    pipe.zadd(box.keys["pending"], dict.fromkeys(ids, 1.0))
    pipe.execute()
    claimed = box.claim(3000, 60, now=2.0)
    assert [m.id for m in claimed] == [i for i in ids if i != "m01234"]
    assert {m.id: m.meta.attempts for m in claimed if m.meta.attempts} == {"m00007": 3}
    assert r.zcard(box.keys["pending"]) == 0
    assert r.zcard(box.keys["inflight"]) == 2499
    assert set(r.zrange(box.keys["inflight"], 0, -1, withscores=True)[-1:]) == {(b"m02499", 62.0)}


def test_a_superseded_message_that_was_tried_leaves_no_history(
    cfg: Config, r: redis.Redis, box: Outbox
) -> None:
    """A pending message in backoff is withdrawn by the counting script when a later click of
    the same user on the same URL takes its action: its retry and meta entries go too."""
    from pirus_bridge.chain import build
    from tests.helpers import clf

    stages = build(cfg, r)
    first = stages.chain.sort([clf("14/Oct/2026:10:00:00 +0000", "/1234/")], "").events
    pipe = r.pipeline(transaction=True)
    stages.recorder.prepare(pipe, first)
    pipe.execute()
    [message] = box.claim(1, 60, now=time.time() + 3600)
    settle(box, "retry", message, time.time(), due=time.time() + 7200,
           meta=DeliveryMeta(attempts=1))
    assert r.hexists(box.keys["meta"], message.id) and r.zcard(box.keys["retry"]) == 1
    later_click = stages.chain.sort([clf("14/Oct/2026:10:00:20 +0000", "/1234/")], "").events
    pipe = r.pipeline(transaction=True)
    stages.recorder.prepare(pipe, later_click)
    pipe.execute()
    assert not r.hexists(box.keys["meta"], message.id) and r.zcard(box.keys["retry"]) == 0
    assert r.zcard(box.keys["pending"]) == 1 and not r.hexists(box.keys["msg"], message.id)
