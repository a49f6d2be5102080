"""Reliable Redis list queues for the live pipeline (the seed's ``q:`` lists, made crash-safe).

Producers LPUSH onto a queue; a worker moves items from its right end into its own processing
list (``BLMOVE … RIGHT LEFT``) and only removes them there in the same transaction that commits
their effects. A worker that dies leaves its processing list behind; its heartbeat key expires,
and any other worker of that queue moves the orphaned items back onto the queue, in order. So a
SIGKILL loses nothing, and since effects and acknowledgement commit together, nothing is applied
twice.

Each queue keeps a registry of its workers (a set, as rq's and dramatiq's worker registries
are): a worker adds itself with every heartbeat, and leaves it when it stops or when another
worker recovers its items. Orphan recovery reads the registry — one ``SMEMBERS`` and one
``EXISTS`` per registered worker — and never scans the keyspace.

Keys (``keys.queue_workers``, ``keys.queue_processing``, ``keys.queue_alive``):
    ``q:loglines``                       raw access lines (the seed's live logger pushes here)
    ``q:bothits`` ``q:objectviews`` ``q:fof`` ``q:other`` ``q:unparsed``  classified lines, for
                                         the category loggers (the seed's names)
    ``q:count``                          usage events (JSON) for the counters
    ``q:workers:{<queue>}``              set: ids of the queue's workers (the registry)
    ``q:processing:{<queue>}:<worker>``  items a worker has taken and not yet committed
    ``q:alive:{<queue>}:<worker>``       the worker's heartbeat (expires when it dies)

``{<queue>}`` is the queue's name as a hash tag, so a queue, its registry, its processing lists
and its heartbeats are in one Redis Cluster slot, and the moves and the recovery script touch
one slot. (Before the registry these were ``q:processing:<queue>:<worker>`` and
``q:alive:<queue>:<worker>``, found by SCAN; see ``docs/redis-model.md`` for the upgrade.)

The heartbeat lasts ``HEARTBEAT_S`` seconds (15; the environment variable
``PIRUS_BRIDGE_HEARTBEAT_S`` overrides it, e.g. for tests). It is renewed on every take, so it
must stay well above the longest batch a worker handles plus its 1-second blocking wait, or a
live worker's batch would be handed to another one and counted twice.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable

import redis

from pirus_bridge import keys

LOGLINES = "q:loglines"
COUNT = "q:count"
CATEGORY_QUEUES = {
    "bot": "q:bothits",
    "usage": "q:objectviews",
    "notfound": "q:fof",
    "other": "q:other",
    "unparsed": "q:unparsed",
}


def _heartbeat_s() -> float:
    raw = os.environ.get("PIRUS_BRIDGE_HEARTBEAT_S", "15")
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value < 2:
        raise ValueError(f"PIRUS_BRIDGE_HEARTBEAT_S must be a number of seconds >= 2, not {raw!r}")
    return value


HEARTBEAT_S = _heartbeat_s()

# Move a worker's items back to the right (oldest) end of the queue, keeping their order.
# KEYS: its processing list, the queue, the queue's registry, its heartbeat. ARGV: its id, and
# 'own' (give back, stay registered), 'leave' (give back, deregister, drop the heartbeat) or
# 'orphan' (only if the heartbeat is gone: adopt the items, deregister). Returns the number of
# items moved, -1 for an orphan that is alive after all.
_RETURN = """
if ARGV[2] == 'orphan' and redis.call('EXISTS', KEYS[4]) == 1 then
  return -1
end
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
  n = n + 1
end
if ARGV[2] ~= 'own' then
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4])
end
return n
"""


def worker_id() -> str:
    """A name unique to this process: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def registered_workers(r: redis.Redis, queue: str) -> set[str]:
    """The ids in ``queue``'s registry: its live workers and any dead ones not yet recovered."""
    return {m.decode() if isinstance(m, bytes) else str(m)
            for m in r.smembers(keys.queue_workers(queue))}


class ReliableQueue:
    """One worker's reliable view of a queue."""

    def __init__(self, r: redis.Redis, name: str, worker: str | None = None) -> None:
        self.r = r
        self.name = name
        self.worker = worker or worker_id()
        self.registry = keys.queue_workers(name)
        self.processing = keys.queue_processing(name, self.worker)
        self.alive = keys.queue_alive(name, self.worker)
        self._return = r.register_script(_RETURN)

    def heartbeat(self) -> None:
        """Renew the heartbeat and be in the registry (again, if a recovery took this worker
        for dead): one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.alive, "1", px=int(HEARTBEAT_S * 1000))
        pipe.sadd(self.registry, self.worker)
        pipe.execute()

    def take(self, max_items: int, block_s: float) -> list[bytes]:
        """Up to ``max_items`` items, waiting at most ``block_s`` for the first one (0: not at
        all).

        Items already in this worker's processing list (held back by a previous round) are
        not returned again: the caller keeps those in memory.
        """
        self.heartbeat()
        if block_s > 0:
            first = self.r.blmove(
                self.name, self.processing, block_s, "RIGHT", "LEFT"  # type: ignore[arg-type]
            )
        else:
            first = self.r.lmove(self.name, self.processing, "RIGHT", "LEFT")
        if first is None:
            return []
        items: list[bytes] = [first]  # type: ignore[list-item]
        if max_items > 1:
            pipe = self.r.pipeline(transaction=False)
            for _ in range(max_items - 1):
                pipe.lmove(self.name, self.processing, "RIGHT", "LEFT")
            items += [x for x in pipe.execute() if x is not None]
        return items

    def ack(self, pipe: redis.client.Pipeline, keep: Iterable[bytes | str] = ()) -> None:
        """Queue, on ``pipe``, the removal of everything taken; ``keep`` stays in processing
        (items whose effects are not committed yet, e.g. events held for reordering)."""
        pipe.delete(self.processing)
        keep = list(keep)
        if keep:
            # The oldest item sits at the right end (as after ``take``), so a recovery gives the
            # kept items back in their order, before anything taken after them.
            pipe.lpush(self.processing, *keep)

    def recover_orphans(self) -> int:
        """Return the items of dead workers of this queue to it (the registry's workers whose
        heartbeat is gone)."""
        others = sorted(registered_workers(self.r, self.name) - {self.worker})
        if not others:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for owner in others:
            pipe.exists(keys.queue_alive(self.name, owner))
        dead = [owner for owner, alive in zip(others, pipe.execute(), strict=True) if not alive]
        moved = 0
        for owner in dead:
            n = int(self._return(
                keys=[keys.queue_processing(self.name, owner), self.name, self.registry,
                      keys.queue_alive(self.name, owner)],
                args=[owner, "orphan"],
            ))  # fmt: skip
            moved += max(n, 0)
        return moved

    def give_back(self) -> int:
        """Return this worker's own uncommitted items to the queue, in order (oldest first)."""
        return int(self._return(keys=[self.processing, self.name, self.registry, self.alive],
                                args=[self.worker, "own"]))

    def stop(self) -> None:
        """Clean exit: give back what is not committed, leave the registry, drop the
        heartbeat."""
        self._return(keys=[self.processing, self.name, self.registry, self.alive],
                     args=[self.worker, "leave"])
