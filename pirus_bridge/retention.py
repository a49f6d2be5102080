"""Keeping personal data no longer than needed (SPEC §5, §6).

* **Failed messages** keep the raw client address and User-Agent they would have been sent
  with only for ``retention.failed_personal_days`` (30) days after they were given up on;
  then their body loses both (they stay in the failure queue, auditable: item, metric, event
  time, failure reason, and can still be retried, without them). ``serve``'s maintenance does
  it.
* **The append-only file.** A delivered message's raw body leaves Redis's memory at once, but an
  append-only file (``appendonly yes``: the embedded server's default) keeps every command that
  ever wrote it until the file is rewritten. After deliveries, ``serve`` asks Redis to rewrite it
  (``BGREWRITEAOF``) at most every ``retention.aof_rewrite_interval_s`` seconds (a day), so the
  delivered bodies leave the disk too; 0 turns this off (e.g. when another tool manages the
  file). A server without an append-only file is left alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.store import text

log = logging.getLogger(__name__)

CHUNK = 500
# Rewrite a message body only while it is still in the failure queue (a retry may have taken it).
_FORGET = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
"""
# in message bodies (outbox.message_json), and in the "event" object of the older format
IDENTITY_FIELDS = ("ip", "ua")


def without_identity(body: str | bytes) -> str | None:
    """The message body with its client address and User-Agent blanked, or None when it has
    none left to blank (or is not a message body)."""
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError:
        return None
    target = data.get("event") if isinstance(data.get("event"), dict) else data
    assert isinstance(target, dict)
    if not any(target.get(f) for f in IDENTITY_FIELDS):
        return None
    for f in IDENTITY_FIELDS:
        if f in target:
            target[f] = ""
    return json.dumps(data, separators=(",", ":"))


def forget_failed_identities(r: redis.Redis, gatherer: str, older_than_s: float,
                             now: float | None = None) -> int:
    """Blank the identity of the gatherer's failed messages given up on more than
    ``older_than_s`` seconds ago; returns how many bodies changed."""
    now = time.time() if now is None else now
    failed, msg = keys.outbox(gatherer, "failed"), keys.outbox(gatherer, "msg")
    ids = [text(m) for m in r.zrangebyscore(failed, "-inf", now - older_than_s)]
    changed = 0
    script = r.register_script(_FORGET)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        args: list[str] = []
        for msg_id, body in zip(chunk, r.hmget(msg, chunk), strict=True):
            new = without_identity(body) if body is not None else None
            if new is not None:
                args += [msg_id, new]
        if args:
            changed += int(script(keys=[failed, msg], args=args))
    return changed


class AofRewriter:
    """Asks Redis to rewrite its append-only file after deliveries, at most every
    ``interval_s`` seconds (0: never)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None  # when we last asked for a rewrite
        self._delivered_then: int | None = None  # deliveries counted at that time

    def maybe_rewrite(self, r: redis.Redis, delivered: int) -> bool:
        """Request a rewrite if there were deliveries since the last one and the interval has
        passed; True if one was requested."""
        if not self.interval_s or delivered == self._delivered_then or delivered == 0:
            return False
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last < self.interval_s:
                return False
            info: dict[str, Any] = r.info("persistence")
            if not int(info.get("aof_enabled", 0)):
                return False
            if int(info.get("aof_rewrite_in_progress", 0)) or \
                    int(info.get("rdb_bgsave_in_progress", 0)):
                return False  # Redis is busy with one: the next maintenance asks again
            try:
                r.bgrewriteaof()
            except redis.ResponseError as e:  # e.g. "already in progress"
                log.info("append-only file rewrite not started: %s", e)
                return False
            self._last, self._delivered_then = now, delivered
        log.info("asked Redis to rewrite its append-only file (delivered message bodies "
                 "leave the disk)")
        return True


def delivered_total(r: redis.Redis, gatherers: Iterable[str]) -> int:
    """Messages delivered so far, over every gatherer and month."""
    pipe = r.pipeline(transaction=False)
    names = list(gatherers)
    for g in names:
        pipe.hgetall(keys.outbox(g, "stats"))
    return sum(int(v) for raw in pipe.execute() for f, v in raw.items()
               if text(f).startswith("sent:"))
