"""Reliable Redis list queues for the live pipeline (the seed's ``q:`` lists, made crash-safe).

Producers LPUSH onto a queue; a worker moves items from its right end into its own processing
list (``BLMOVE … RIGHT LEFT``) and only removes them there in the same transaction that commits
their effects. A worker that dies leaves its processing list behind; its heartbeat key expires,
and any other worker of that queue moves the orphaned items back onto the queue, in order. So a
SIGKILL loses nothing, and since effects and acknowledgement commit together, nothing is applied
twice.

Keys:
    ``q:loglines``                       raw access lines (the seed's live logger pushes here)
    ``q:bothits`` ``q:objectviews`` ``q:fof`` ``q:other`` ``q:unparsed``  classified lines, for
                                         the category loggers (the seed's names)
    ``q:count``                          usage events (JSON) for the counters
    ``q:processing:<queue>:<worker>``    items a worker has taken and not yet committed
    ``q:alive:<queue>:<worker>``         the worker's heartbeat (expires when it dies)

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

# Move a dead worker's items back to the right (oldest) end of the queue, keeping their order.
_RECOVER = """
local n = 0
while true do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not item then break end
  n = n + 1
end
redis.call('DEL', KEYS[1])
return n
"""


def worker_id() -> str:
    """A name unique to this process: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ReliableQueue:
    """One worker's reliable view of a queue."""

    def __init__(self, r: redis.Redis, name: str, worker: str | None = None) -> None:
        self.r = r
        self.name = name
        self.worker = worker or worker_id()
        self.processing = f"q:processing:{name}:{self.worker}"
        self.alive = f"q:alive:{name}:{self.worker}"
        self._recover = r.register_script(_RECOVER)

    def heartbeat(self) -> None:
        self.r.set(self.alive, "1", px=int(HEARTBEAT_S * 1000))

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
        """Return the items of dead workers of this queue to it."""
        moved = 0
        for key in self.r.scan_iter(match=f"q:processing:{self.name}:*", count=500):
            name = key.decode() if isinstance(key, bytes) else str(key)
            owner = name.rsplit(":", 1)[1]
            if owner == self.worker or self.r.exists(f"q:alive:{self.name}:{owner}"):
                continue
            moved += int(self._recover(keys=[name, self.name]))
        return moved

    def give_back(self) -> int:
        """Return this worker's own uncommitted items to the queue, in order (oldest first)."""
        return int(self._recover(keys=[self.processing, self.name]))

    def stop(self) -> None:
        """Clean exit: give back what is not committed and drop the heartbeat."""
        self.give_back()
        self.r.delete(self.alive)
