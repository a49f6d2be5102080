"""Delivery under faults: a long gatherer outage, a pusher killed mid-batch, Redis restarted,
the same log ingested twice. Nothing is lost and nothing is sent twice beyond what was in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pirus_bridge.outbox import Outbox
from pirus_bridge.pusher import Pusher
from tests.delivery_support import (
    FakeClock,
    core,
    delivered_once,
    delivery_config,
    enqueue,
    expected_events,
    ingest_lines,
    per_event,
    usage_lines,
    write_config_file,
)
from tests.gatherer import Gatherer
from tests.helpers import ROOT, make_config, wait_until
from tests.redis_server import RedisServer

HOUR = 3600.0


@pytest.fixture
def gatherer() -> Iterator[Gatherer]:
    with Gatherer() as g:
        yield g


def test_long_outage_pauses_the_gatherer_without_burning_attempts(
    redis_url: str, r: redis.Redis, gatherer: Gatherer, tmp_path: Path
) -> None:
    threshold = 5
    cfg = delivery_config(
        redis_url, gatherer.url, batch_size=20,
        retry={"max_attempts": 3, "initial_backoff_s": 1, "max_backoff_s": 600},
        circuit={"failure_threshold": threshold, "probe_interval_s": 60},
    )
    clock = FakeClock()
    pusher = Pusher(cfg, r, cfg.gatherers["irus"], clock=clock)
    box = Outbox(r, "irus")
    gatherer.stop()  # connection refused from now on
    enqueue(cfg, r, tmp_path, 50)
    try:
        first = pusher.push_once()
        assert first.circuit == "open" and first.sent == 0 and first.failed == 0
        assert first.retried == 0 and first.released == 20  # the batch that opened it: held
        assert first.paused_reason == ("down: 20 calls in a row failed (last: connection"
                                       " refused)")
        circuit = box.circuit()
        assert circuit.state == "open" and circuit.next_probe == clock() + 60
        assert pusher.push_once().to_json()["released"] == 0  # no probe before its time

        for _ in range(72):  # three days, an hour at a time: one probe per pass
            clock.advance(HOUR)
            result = pusher.push_once()
            assert (result.circuit, result.sent, result.failed) == ("open", 0, 0)
            assert result.released == 1

        stats = box.stats(clock())
        assert stats["failed"] == 0 and stats["in_flight"] == 0 and stats["pending"] == 50
        messages = box.messages(i for i, _ in box.ids("pending", 100))
        attempts = [m.meta.attempts for m in messages.values()]
        assert max(attempts) == 0  # the outage used up no message's attempts
        assert all(m.meta.last_error == "connection refused" for m in messages.values())

        gatherer.start()  # same port: the gatherer is back
        clock.advance(HOUR)
        result = pusher.push_once()
        assert (result.sent, result.failed, result.circuit) == (50, 0, "closed")
    finally:
        pusher.close()
    assert delivered_once(gatherer, 50)
    assert gatherer.received == 50
    assert box.circuit().state == "closed"
    assert core(box.stats(clock())) == {"pending": 0, "in_flight": 0, "sent": 50, "failed": 0,
                                        "oldest_pending_age_s": 0.0}


def test_probe_answered_with_an_http_error_closes_the_circuit(
    redis_url: str, r: redis.Redis, gatherer: Gatherer, tmp_path: Path
) -> None:
    # A gatherer that answers at all (here 404 for the probe) is up: the circuit closes and
    # the rest is delivered. The probe's message is held, not failed: one refusal with
    # nothing accepted after it does not say the message is wrong; once the gatherer has
    # accepted the rest, it is tried again.
    cfg = delivery_config(redis_url, gatherer.url, batch_size=20,
                          circuit={"failure_threshold": 2, "probe_interval_s": 60})
    clock = FakeClock()
    pusher = Pusher(cfg, r, cfg.gatherers["irus"], clock=clock)
    box = Outbox(r, "irus")
    gatherer.stop()
    enqueue(cfg, r, tmp_path, 10)
    try:
        assert pusher.push_once().circuit == "open"
        gatherer.start()
        gatherer.script([404])
        clock.advance(HOUR)
        probe = pusher.push_once()  # the probe gets the 404; the same pass sends the rest
        assert (probe.failed, probe.sent, probe.released, probe.circuit) == (0, 9, 1, "closed")
        assert box.stats(clock())["pending"] == 1
        clock.advance(60)
        assert pusher.push_once().sent == 1  # the gatherer takes it now
    finally:
        pusher.close()
    assert box.stats(clock())["failed"] == 0
    assert gatherer.received == 11 and len(per_event(gatherer.requests)) == 10  # 404, then 200


def test_pusher_killed_mid_batch_loses_nothing(
    redis_url: str, r: redis.Redis, gatherer: Gatherer, tmp_path: Path
) -> None:
    from bench.loggen import generate_log

    batch_size, lease_s = 50, 2
    config = write_config_file(tmp_path / "pirus-bridge.yaml", redis_url, gatherer.url,
                               lease_s=lease_s, batch_size=batch_size, concurrency=4,
                               read_timeout_s=1, deadline_s=1.5)
    cfg = delivery_config(redis_url, gatherer.url, lease_s=lease_s, batch_size=batch_size,
                          deadline_s=1.5)
    log = tmp_path / "access.log"
    generate_log(log, 25_000, seed=11)
    cli = [sys.executable, "-m", "pirus_bridge", "--config", str(config)]
    ingest = subprocess.run([*cli, "ingest", str(log), "--json"], capture_output=True,
                            text=True, check=True, cwd=ROOT)
    total = json.loads(ingest.stdout)["enqueued"]["irus"]
    assert total > 2_000
    expected = expected_events(cfg, r)
    assert len(expected) == total

    gatherer.set_default(200, delay=0.02)  # slow enough to be caught mid-batch
    proc = subprocess.Popen([*cli, "push", "--once"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: gatherer.received >= 300, timeout=30), "push made no progress"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    received_at_kill = gatherer.received
    assert received_at_kill < total, "the push finished before it was killed"
    box = Outbox(r, "irus")
    assert box.stats()["in_flight"] > 0  # leases left behind by the dead pusher

    # Its leases run out (real time: lease_s), then another push delivers the rest.
    gatherer.set_default(200)
    assert wait_until(lambda: all(s < time.time() for _, s in box.ids("inflight", 10**6)),
                      timeout=lease_s + 5)
    again = subprocess.run([*cli, "push", "--once", "--json"], capture_output=True, text=True,
                           check=True, cwd=ROOT)
    assert json.loads(again.stdout)["irus"]["failed"] == 0

    counts = per_event(gatherer.requests)
    assert set(counts) >= expected  # every event delivered
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= batch_size  # at most what was in flight when it died
    stats = subprocess.run([*cli, "outbox", "stats", "--json"], capture_output=True, text=True,
                           check=True, cwd=ROOT)
    assert core(json.loads(stats.stdout)["irus"]) | {"oldest_pending_age_s": 0} == {
        "pending": 0, "in_flight": 0, "sent": total, "failed": 0, "oldest_pending_age_s": 0,
    }


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_redis_restarted_between_enqueue_and_push_loses_nothing(
    tmp_path: Path, gatherer: Gatherer, how: str
) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()  # appendfsync always
    r = server.client()
    try:
        cfg = delivery_config(server.url, gatherer.url)
        enqueue(cfg, r, tmp_path, 120)
        expected = expected_events(cfg, r)
        if how == "restart":
            server.restart()
        else:  # a crash: only what was fsynced to the append-only file survives
            server.kill()
            server.start()
        pusher = Pusher(cfg, r, cfg.gatherers["irus"], clock=FakeClock())  # same client
        try:
            result = pusher.push_once()
        finally:
            pusher.close()
        assert (result.sent, result.failed) == (120, 0)
        assert set(per_event(gatherer.requests)) == expected
        assert delivered_once(gatherer, 120)
        assert Outbox(r, "irus").month_counts("2026-10") == {
            "qualified": 120, "sent": 120, "failed": 0, "pending": 0}
    finally:
        r.close()
        server.stop()


def test_same_log_ingested_twice_is_sent_once(
    redis_url: str, r: redis.Redis, gatherer: Gatherer, tmp_path: Path
) -> None:
    cfg = delivery_config(redis_url, gatherer.url)
    lines = usage_lines(40) + usage_lines(20, downloads=False, first_item=700)
    pusher = Pusher(cfg, r, cfg.gatherers["irus"], clock=FakeClock())
    try:
        assert ingest_lines(cfg, r, tmp_path / "a.log", lines).enqueued == {"irus": 60}
        assert ingest_lines(cfg, r, tmp_path / "a-copy.log", lines).enqueued == {"irus": 0}
        assert pusher.push_once().sent == 60
        # And once more after delivery (say the rotated file is fed in again).
        assert ingest_lines(cfg, r, tmp_path / "a-again.log", lines).enqueued == {"irus": 0}
        assert pusher.push_once().sent == 0
    finally:
        pusher.close()
    assert delivered_once(gatherer, 60)
    assert gatherer.received == 60


def test_same_log_to_two_gatherers_each_get_it_once(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """Two gatherers with their own outboxes: one outage does not hold up the other."""
    from tests.delivery_support import gatherer_config

    with Gatherer() as a, Gatherer() as b:
        cfg = make_config(redis_url, gatherers={"irus": gatherer_config(a.url),
                                                "other": gatherer_config(b.url)})
        assert ingest_lines(cfg, r, tmp_path / "a.log", usage_lines(30)).enqueued == {
            "irus": 30, "other": 30}
        b.stop()
        clock = FakeClock()
        pushers = [Pusher(cfg, r, g, clock=clock) for g in cfg.gatherers.values()]
        try:
            assert [p.push_once().sent for p in pushers] == [30, 0]
            b.start()
            clock.advance(HOUR)
            assert [p.push_once().sent for p in pushers] == [0, 30]
        finally:
            for p in pushers:
                p.close()
        assert delivered_once(a, 30) and delivered_once(b, 30)
