"""The queue workers (``pirus-bridge worker ROLE``) as real subprocesses: routing, logging,
counting, SIGKILL of each role, two counters, and a Redis outage under RedisLogHandler.

Counts are compared with a bulk ``ingest`` of the same lines into database 1. Workers run with
``PIRUS_BRIDGE_HEARTBEAT_S=2`` so a killed worker's items are recovered within seconds.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from pathlib import Path

import pytest
import redis

from pirus_bridge.loghandler import RedisLogHandler
from pirus_bridge.queues import ReliableQueue
from tests.helpers import ROBOT, clf, wait_until
from tests.live_support import (
    QUEUES,
    Process,
    bulk_reference,
    generated_lines,
    lines_counted,
    pipeline_settled,
    processing_items,
    report,
    snapshot,
    stop_all,
    worker_keys,
    write_config,
)
from tests.redis_server import RedisServer

ROLES = ("classifier", "counter", "logger")
FILES = {"q:bothits": "bothits.log", "q:objectviews": "objectviews.log", "q:fof": "fof.log",
         "q:other": "other.log", "q:unparsed": "unparsed.log"}




def start(procs: list[Process], config: Path, role: str, *options: str) -> Process:
    p = Process(config, *options, "worker", role)
    procs.append(p)
    return p


def logged_lines(log_dir: Path) -> collections.Counter[str]:
    """Every line in the segregated log files, rotated backups included."""
    found: collections.Counter[str] = collections.Counter()
    for path in log_dir.glob("*.log*"):
        found.update(path.read_text().splitlines())
    return found


def test_worker_roles_route_log_and_count(
    tmp_path: Path, redis_url: str, r: redis.Redis, procs: list[Process]
) -> None:
    when = "02/Oct/2026:10:00:{:02d} +0000"
    lines = {
        "q:objectviews": [clf(when.format(0), "/7/"), clf(when.format(5), "/7/1/a.pdf"),
                          clf(when.format(6), "/7/1/a.pdf")],  # the last is a double-click
        "q:bothits": [clf(when.format(1), "/7/", ua=ROBOT)],
        "q:fof": [clf(when.format(2), "/99999/", status=404)],
        "q:other": [clf(when.format(3), "/style/auto.css")],
        "q:unparsed": ["this is not an access log line\n"],
    }
    feed = [line for group in lines.values() for line in group]
    config = write_config(tmp_path, redis_url)
    r.lpush("q:loglines", *feed)

    # classifier alone: every line lands on its category's queue, usage events on q:count
    classifier = start(procs, config, "classifier")
    assert wait_until(lambda: r.llen("q:loglines") == 0 and processing_items(r) == 0)
    for queue, expected in lines.items():
        assert [x.decode() for x in reversed(r.lrange(queue, 0, -1))] == expected  # type: ignore[union-attr]
    events = [json.loads(x) for x in reversed(r.lrange("q:count", 0, -1))]  # type: ignore[union-attr]
    assert [(e["item"], e["metric"], e["ts"] % 60) for e in events] == [
        ("7", "Investigation", 0), ("7", "Request", 5), ("7", "Request", 6)]
    assert lines_counted(r) == 0  # the logger keeps the u: counters

    # logger: the segregated files and the seed's u:<category> counters
    logger = start(procs, config, "logger")
    assert wait_until(lambda: lines_counted(r) == len(feed))
    assert all(r.llen(q) == 0 for q in lines)
    log_dir = tmp_path / "logs"
    for queue, expected in lines.items():
        assert (log_dir / FILES[queue]).read_text() == "".join(expected)
    assert {k: int(r.get(k) or 0) for k in ("u:objectviews", "u:bothits", "u:fof", "u:other",
                                            "u:unparsed")} == {
        "u:objectviews": 3, "u:bothits": 1, "u:fof": 1, "u:other": 1, "u:unparsed": 1}

    # counter: the events counted exactly as bulk ingest counts the same lines
    counter = start(procs, config, "counter")
    assert wait_until(lambda: pipeline_settled(r, len(feed)))
    assert stop_all([classifier, logger, counter]) == [0, 0, 0]
    expected_keys, expected_report = bulk_reference(tmp_path, redis_url, feed)
    assert snapshot(r) == expected_keys
    assert report(config) == expected_report == []  # October, not the month reported
    assert int(r.hget("c:{7}", "2026-10:TIR") or 0) == 1  # the double-click was dropped


def _kill_mid_batch(r: redis.Redis, victim: Process) -> int:
    """SIGKILL ``victim`` while its processing lists hold items; how many they held.

    It is paused first, so that what its lists hold at the kill is known for sure.
    """
    for _ in range(500):
        victim.pause()
        held = sum(int(r.llen(k)) for k in worker_keys(r, victim.pid))
        if held:
            victim.kill()
            return held
        victim.resume()
        time.sleep(0.002)
    raise AssertionError("the worker never held a batch")


@pytest.mark.parametrize("role", ROLES)
def test_worker_sigkill_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, redis_url: str, r: redis.Redis, procs: list[Process], role: str
) -> None:
    lines = generated_lines(tmp_path, 2000, seed=21, days=0.15)
    config = write_config(tmp_path, redis_url, batch_size=25, log_max_bytes=65536)
    workers = {name: start(procs, config, name) for name in ROLES}
    r.lpush("q:loglines", *lines[:600])
    assert wait_until(lambda: lines_counted(r) > 150, timeout=30)
    r.lpush("q:loglines", *lines[600:])
    victim = workers[role]
    held = _kill_mid_batch(r, victim)
    dead = worker_keys(r, victim.pid)
    assert dead and lines_counted(r) < len(lines)

    replacement = start(procs, config, role)  # at once, as a supervisor would
    assert wait_until(lambda: pipeline_settled(r, len(lines)), timeout=40), replacement.stderr
    assert not any(r.exists(k) for k in dead)
    assert "recovered" in replacement.stderr
    others = [p for name, p in workers.items() if name != role]
    assert stop_all([*others, replacement]) == [0, 0, 0]
    assert not list(r.scan_iter(match="q:processing:*")) and not any(r.llen(q) for q in QUEUES)

    expected, expected_report = bulk_reference(tmp_path, redis_url, lines)
    assert snapshot(r) == expected
    assert report(config) == expected_report
    logged, fed = logged_lines(tmp_path / "logs"), collections.Counter(
        line.rstrip("\n") for line in lines)
    if role == "logger":  # at-least-once: a batch written but not acknowledged is written again
        assert not fed - logged  # nothing missing
        assert sum((logged - fed).values()) <= held
    else:
        assert logged == fed


def test_two_counters_count_like_one(
    tmp_path: Path, redis_url: str, r: redis.Redis, procs: list[Process]
) -> None:
    lines = generated_lines(tmp_path, 3000, seed=4, days=0.15)
    config = write_config(tmp_path, redis_url, batch_size=50)
    # Both counters wait on q:count before any event arrives, so each gets a share.
    counters = [start(procs, config, "counter") for _ in range(2)]
    assert wait_until(lambda: len(list(r.scan_iter(match="q:alive:q:count:*"))) == 2,
                      timeout=30)
    workers = [start(procs, config, "classifier"), *counters, start(procs, config, "logger")]
    r.lpush("q:loglines", *lines)
    assert wait_until(lambda: pipeline_settled(r, len(lines)), timeout=30)
    assert stop_all(workers) == [0, 0, 0, 0]
    for counter in workers[1:3]:
        assert "counter worker stopped after 0 item(s)" not in counter.stderr
    expected, expected_report = bulk_reference(tmp_path, redis_url, lines)
    assert snapshot(r) == expected
    assert report(config) == expected_report


def test_counter_gives_back_held_events_in_order(redis_url: str, r: redis.Redis) -> None:
    # what a counter keeps (its reorder buffer) comes back before what it took afterwards
    r.lpush("q:count", "e1", "e2", "e3", "e4")
    q = ReliableQueue(r, "q:count", worker="dead")
    q.take(2, block_s=0.1)
    pipe = r.pipeline()
    q.ack(pipe, keep=[b"e1", b"e2"])  # held, oldest first
    pipe.execute()
    q.take(2, block_s=0.1)
    r.delete(q.alive)
    ReliableQueue(r, "q:count", worker="other").recover_orphans()
    assert [x.decode() for x in reversed(r.lrange("q:count", 0, -1))] == [  # type: ignore[union-attr]
        "e1", "e2", "e3", "e4"]


def test_redis_crash_mid_batch_loses_nothing_and_buffered_lines_are_counted(
    tmp_path: Path, procs: list[Process]
) -> None:
    # Redis dies while every worker is in the middle of a batch (writes are paused first, so
    # taken items sit uncommitted in the processing lists), and the web application goes on
    # logging into RedisLogHandler's buffer until Redis is back.
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        _crash(tmp_path, server, procs)
    finally:
        server.stop()


def _crash(tmp_path: Path, server: RedisServer, procs: list[Process]) -> None:
    lines = generated_lines(tmp_path, 3000, seed=31, days=0.2)
    url = server.url
    r = server.client()
    config = write_config(tmp_path, url, batch_size=20)
    workers = [start(procs, config, role, "-v") for role in ROLES]  # -v: each retry is logged
    handler = RedisLogHandler(url, capacity=len(lines), flush_interval_s=0.05)
    handler.max_backoff_s = 0.2
    access = logging.getLogger("tests.workers.access")
    access.propagate = False
    access.setLevel(logging.INFO)
    access.addHandler(handler)
    try:
        for line in lines[:1500]:
            access.info(line.rstrip("\n"))
        assert wait_until(lambda: lines_counted(r) > 200, timeout=30)
        r.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
        assert wait_until(lambda: processing_items(r) > 0)
        assert lines_counted(r) < 1500
        server.kill()  # with appendfsync always: everything before the pause is on disk

        started = time.perf_counter()
        for line in lines[1500:]:
            access.info(line.rstrip("\n"))
        assert time.perf_counter() - started < 1.0
        # a retry: a worker's second round also looks for dead workers' items, and survives;
        # the loss itself is one warning, however many retries
        assert wait_until(lambda: all("Redis still unavailable" in w.stderr
                                      for w in workers), timeout=60), [w.stderr for w in workers]
        assert all(w.stderr.count("WARNING pirus_bridge.redisconn: Redis at") == 1
                   for w in workers), [w.stderr for w in workers]
        server.start()
        assert wait_until(lambda: pipeline_settled(r, len(lines)), timeout=60), [
            w.stderr for w in workers]
        assert all(w.stderr.count("is available again") == 1 for w in workers), [
            w.stderr for w in workers]
    finally:
        access.removeHandler(handler)
        handler.close()
    assert stop_all(workers) == [0, 0, 0], [w.stderr for w in workers]
    assert r.get("u:dropped") is None
    expected, _ = bulk_reference(tmp_path, url, lines)
    assert snapshot(r) == expected
    r.close()


def test_logger_batches_rotate_at_the_size_limit(tmp_path: Path) -> None:
    import logging.handlers

    from pirus_bridge.workers import LoggerWorker

    path = tmp_path / "bothits.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=100, backupCount=3,
                                                   encoding="utf-8")
    try:
        batch = [f"line {i:02d} of a batch\r\n".encode() for i in range(4)]  # 4 × 21 bytes
        LoggerWorker._write(handler, batch)
        LoggerWorker._write(handler, batch)  # would pass 100 bytes: rotates first
        LoggerWorker._write(handler, [b"\xffnot utf-8\n"])
    finally:
        handler.close()
    rotated = (tmp_path / "bothits.log.1").read_text()
    assert rotated == "".join(f"line {i:02d} of a batch\n" for i in range(4))
    current = path.read_text(encoding="utf-8")
    assert current.startswith("line 00 of a batch\n") and current.endswith("\ufffdnot utf-8\n")
    assert current.count("\n") == 5
