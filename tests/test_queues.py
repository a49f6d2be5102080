"""Reliable queues: nothing lost when a worker dies, nothing taken twice."""

from __future__ import annotations

import redis

from pirus_bridge.queues import ReliableQueue


def test_queue_take_is_fifo_and_ack_removes(r: redis.Redis) -> None:
    r.lpush("q:test", *[f"line {i}" for i in range(10)])
    q = ReliableQueue(r, "q:test", worker="w1")
    got = q.take(4, block_s=0.1)
    assert got == [f"line {i}".encode() for i in range(4)]
    assert r.llen("q:test") == 6 and r.llen(q.processing) == 4
    pipe = r.pipeline()
    q.ack(pipe)
    pipe.execute()
    assert r.llen(q.processing) == 0


def test_queue_take_times_out_empty(r: redis.Redis) -> None:
    assert ReliableQueue(r, "q:empty", worker="w").take(10, block_s=0.05) == []


def test_queue_ack_can_keep_items(r: redis.Redis) -> None:
    r.lpush("q:test", "a", "b", "c")
    q = ReliableQueue(r, "q:test", worker="w1")
    q.take(3, block_s=0.1)
    pipe = r.pipeline()
    q.ack(pipe, keep=[b"c"])
    pipe.execute()
    assert r.lrange(q.processing, 0, -1) == [b"c"]


def test_queue_dead_worker_items_return_in_order(r: redis.Redis) -> None:
    r.lpush("q:test", *[str(i) for i in range(6)])
    dead = ReliableQueue(r, "q:test", worker="dead")
    assert dead.take(3, block_s=0.1) == [b"0", b"1", b"2"]
    r.delete(dead.alive)  # its heartbeat expired
    alive = ReliableQueue(r, "q:test", worker="alive")
    assert alive.recover_orphans() == 3
    assert alive.take(10, block_s=0.1) == [str(i).encode() for i in range(6)]


def test_queue_live_worker_items_are_not_stolen(r: redis.Redis) -> None:
    r.lpush("q:test", "a", "b")
    busy = ReliableQueue(r, "q:test", worker="busy")
    busy.take(2, block_s=0.1)
    other = ReliableQueue(r, "q:test", worker="other")
    assert other.recover_orphans() == 0
    assert r.llen(busy.processing) == 2


def test_queue_stop_gives_back_uncommitted(r: redis.Redis) -> None:
    r.lpush("q:test", "a", "b")
    q = ReliableQueue(r, "q:test", worker="w")
    q.take(2, block_s=0.1)
    q.stop()
    assert r.lrange("q:test", 0, -1) == [b"b", b"a"]
    assert not r.exists(q.alive)
