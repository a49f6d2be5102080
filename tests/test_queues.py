"""Reliable queues: nothing lost when a worker dies, nothing taken twice."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from pirus_bridge import keys
from pirus_bridge.queues import ReliableQueue, registered_workers


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


def test_queue_recovery_reads_the_registry_not_the_keyspace(r: redis.Redis) -> None:
    r.lpush("q:test", *[str(i) for i in range(4)])
    dead = ReliableQueue(r, "q:test", worker="dead")
    dead.take(2, block_s=0.1)
    r.delete(dead.alive)
    # a processing list nobody registered (no worker of this version wrote it) is not looked at
    r.lpush(keys.queue_processing("q:test", "stranger"), "x")
    alive = ReliableQueue(r, "q:test", worker="alive")
    alive.heartbeat()
    assert registered_workers(r, "q:test") == {"dead", "alive"}
    r.config_resetstat()
    assert alive.recover_orphans() == 2
    assert not any(k.startswith("cmdstat_scan") for k in r.info("commandstats"))
    assert registered_workers(r, "q:test") == {"alive"}  # the dead one left the registry
    assert r.lrange(keys.queue_processing("q:test", "stranger"), 0, -1) == [b"x"]
    assert alive.recover_orphans() == 0


def test_queue_worker_taken_for_dead_registers_again(r: redis.Redis) -> None:
    # a worker stalled past its heartbeat loses its items to another and its registry entry;
    # its next take puts it back in the registry, so its later items are recoverable too
    r.lpush("q:test", "a", "b")
    slow = ReliableQueue(r, "q:test", worker="slow")
    slow.take(1, block_s=0.1)
    r.delete(slow.alive)
    other = ReliableQueue(r, "q:test", worker="other")
    assert other.recover_orphans() == 1
    assert "slow" not in registered_workers(r, "q:test")
    slow.take(1, block_s=0.1)
    assert "slow" in registered_workers(r, "q:test")


def test_queue_stop_leaves_the_registry(r: redis.Redis) -> None:
    q = ReliableQueue(r, "q:test", worker="w")
    q.take(1, block_s=0.01)
    assert registered_workers(r, "q:test") == {"w"}
    q.stop()
    assert registered_workers(r, "q:test") == set()
    assert not r.exists(q.alive, q.processing, q.registry)


def test_queue_give_back_keeps_the_worker_registered(r: redis.Redis) -> None:
    r.lpush("q:test", "a", "b")
    q = ReliableQueue(r, "q:test", worker="w")
    q.take(2, block_s=0.1)
    assert q.give_back() == 2
    assert r.lrange("q:test", 0, -1) == [b"b", b"a"]
    assert registered_workers(r, "q:test") == {"w"} and r.exists(q.alive)


@pytest.mark.parametrize(
    ("key", "tagged"),
    [("q:loglines", False), ("ob:{irus}:pending", True), ("a{}b", False), ("a{b", False),
     ("{}x{y}", False), ("x{y}{z}", True), ("{y}", True)],
)
def test_has_hash_tag_follows_the_cluster_hashing_rule(key: str, tagged: bool) -> None:
    assert keys.has_hash_tag(key) is tagged
    if tagged:  # the part in braces decides the slot
        tag = key[key.index("{"):key.index("}", key.index("{")) + 1]
        assert key_slot(f"other:{tag}".encode()) == key_slot(key.encode())


def test_queue_keys_share_the_queues_slot() -> None:
    for queue in ("q:loglines", "q:count", "q:bothits", "q:objectviews", "q:fof", "q:other",
                  "q:unparsed", "q:bothits:{q:loglines}", "a{b"):
        slot = key_slot(queue.encode())
        names = (keys.queue_workers(queue), keys.queue_processing(queue, "host-1-abc"),
                 keys.queue_alive(queue, "host-1-abc"))
        assert {key_slot(n.encode()) for n in names} == {slot}


def test_queue_name_with_a_stray_closing_brace_is_refused(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        ReliableQueue(r, "a{}b}")


def test_queues_sharing_a_tag_keep_their_workers_apart(r: redis.Redis) -> None:
    # two queues in one slot (one tag): each its own registry and processing lists
    a, b = "q:bothits:{q:loglines}", "q:fof:{q:loglines}"
    r.lpush(a, "1")
    r.lpush(b, "2")
    qa, qb = ReliableQueue(r, a, worker="w"), ReliableQueue(r, b, worker="w")
    qa.take(1, block_s=0.1)
    qb.take(1, block_s=0.1)
    assert qa.registry != qb.registry and qa.processing != qb.processing
    r.delete(qa.alive)
    assert ReliableQueue(r, a, worker="other").recover_orphans() == 1
    assert r.lrange(a, 0, -1) == [b"1"] and r.lrange(qb.processing, 0, -1) == [b"2"]
