"""A ``logging`` handler that feeds access-log lines to the live pipeline's ``q:loglines`` list.

The seed's "very small python logger, that pushes loglines directly onto a redis list", made safe
to run inside a web application: :meth:`RedisLogHandler.emit` only appends to a bounded
in-memory buffer (no I/O, never raises); a daemon thread LPUSHes batches. Consumers take from the
RIGHT end (``BLMOVE q:loglines <processing> RIGHT LEFT``), so they see lines in emit order.

When Redis is away the buffer holds up to ``capacity`` lines; beyond that the OLDEST are dropped:
the retained lines stay one contiguous, most recent stretch, and the lost stretch is a single time
window at the start of the outage, which the warning names so an admin can backfill it from the
web server's own log file. Drops are added to the Redis counter ``u:dropped``.

Run as ``python -m pirus_bridge.loghandler --url redis://…`` it pushes its stdin lines, for
Apache's piped logs (``CustomLog "|…" combined``); see ``docs/live-logging.md``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pirus_bridge.queues import LOGLINES
from pirus_bridge.redisconn import redact

__all__ = ["DROPPED", "RedisLogHandler", "access_line", "main"]

DROPPED = "u:dropped"  # lines this handler had to drop (seed's ``u:`` processing counters)
log = logging.getLogger(__name__)


def _encode(line: str) -> bytes:
    try:  # surrogateescape gives back the exact bytes of lines read from a pipe
        return line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return line.encode("utf-8", "backslashreplace")


class RedisLogHandler(logging.Handler):
    """Buffer formatted records in memory and LPUSH them onto ``key`` from a background thread.

    The message (``record.getMessage()``, or the output of a formatter set on the handler) is
    pushed as is. Records logged by the handler's own thread are ignored, so its warnings never
    loop back into the queue. ``flush()``/``close()`` are called by ``logging.shutdown`` at exit.
    """

    initial_backoff_s = 0.05
    max_backoff_s = 4.0
    llen_interval_s = 1.0  # how often to re-check LLEN while paused by ``max_queue_len``
    close_timeout_s = 2.0

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        key: str = LOGLINES,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_queue_len: int | None = None,
        level: int = logging.INFO,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("give a Redis url or a client (not both)")
        if capacity < 1 or batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("capacity and batch_size must be >= 1, flush_interval_s > 0")
        if max_queue_len is not None and max_queue_len < 1:
            raise ValueError("max_queue_len must be >= 1 (or None for no limit)")
        super().__init__(level)
        self._own_client = url is not None
        if url is not None:
            # No client-side retries: this handler backs off itself and must not stall close().
            client = redis.Redis.from_url(
                url, socket_timeout=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
            )
        assert client is not None
        self._client = client
        self.where = redact(url) if url else "Redis"
        self.key, self.capacity, self.batch_size = key, capacity, batch_size
        self.flush_interval_s, self.max_queue_len = flush_interval_s, max_queue_len
        self._dropped = 0
        self._closed = False
        self._start()
        ref = weakref.WeakMethod(self._start)
        # A pre-forking server (gunicorn --preload, uWSGI) forks after the handler is made:
        # the child needs its own thread and lock; the parent still owns the buffered lines.
        os.register_at_fork(after_in_child=lambda: (m := ref()) is not None and m())

    def _start(self) -> None:
        lock = threading.Lock()
        self._wake = threading.Condition(lock)  # the flush thread waits here
        self._settled = threading.Condition(lock)  # flush() callers wait here
        self._buf: collections.deque[str] = collections.deque()
        # Sequence numbers: the buffer holds lines [_buf_head, _buf_head + len); the batch in
        # flight holds [_fly_head, _fly_head + _fly_n), of which the first _fly_doomed are
        # dropped if the push fails (drop-oldest applied to lines already taken).
        self._buf_head = self._fly_head = self._fly_n = self._fly_doomed = 0
        self._unreported = self._episode = 0
        self._episode_span: tuple[float, float] = (0.0, 0.0)
        self._kick = self._stop = self._failing = False
        self._known_len: int | None = None
        self._llen_at = 0.0
        self._thread = threading.Thread(target=self._run, name="pirus-loghandler", daemon=True)
        if not self._closed:
            self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines dropped since start (buffer full, or left undelivered at close)."""
        return self._dropped

    @property
    def buffered(self) -> int:
        """Lines waiting in memory, including a batch being pushed."""
        return len(self._buf) + self._fly_n

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage() if self.formatter is None else self.formatter.format(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Append the formatted record to the buffer: O(1), no I/O, never raises."""
        if threading.current_thread() is self._thread:
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._wake:
            if self._closed:
                self._note_drop(1)
                return
            if len(self._buf) + self._fly_n - self._fly_doomed >= self.capacity:
                if self._fly_doomed < self._fly_n:
                    self._fly_doomed += 1  # settled when the push in flight succeeds or fails
                else:
                    self._buf.popleft()
                    self._buf_head += 1
                    self._note_drop(1)
            self._buf.append(line)
            if len(self._buf) == self.batch_size and not self._failing:
                self._wake.notify()

    def flush(self, timeout: float = 2.0) -> bool:  # type: ignore[override]  # bool is useful
        """Push every line emitted before this call; False if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._wake:
            target = self._buf_head + len(self._buf)
            self._kick = True
            self._wake.notify()
            while (self._fly_head if self._fly_n else self._buf_head) < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._settled.wait(left)
        return True

    def close(self) -> None:
        """Flush (briefly), stop the thread and close an own connection; idempotent."""
        if self._closed:
            return
        self.flush(self.close_timeout_s)
        with self._wake:
            self._stop = self._closed = True
            self._wake.notify()
        self._thread.join(self.close_timeout_s)
        if self._own_client and not self._thread.is_alive():
            self._client.close()
        super().close()

    # -- the flush thread ------------------------------------------------------------------

    def _note_drop(self, n: int) -> None:  # caller holds the lock
        now = time.time()
        self._dropped += n
        self._unreported += n
        self._episode_span = (self._episode_span[0] if self._episode else now, now)
        self._episode += n

    def _run(self) -> None:
        delay = 0.0
        while True:
            with self._wake:
                if not (self._stop or self._kick):
                    self._wake.wait(delay or self.flush_interval_s)
                self._kick = False
                stopping = self._stop
            if self._drain():
                delay = 0.0
            else:
                delay = min(max(delay * 2, self.initial_backoff_s), self.max_backoff_s)
            if stopping:
                break
        self._finish()

    def _drain(self) -> bool:
        """Push all that is buffered, batch by batch; False when Redis failed."""
        try:
            while self._push_batch():
                pass
        except Exception as e:  # a Redis outage, or anything else: never kill the thread
            if not self._failing:
                log.warning(
                    "cannot push access lines to %s (%s); buffering up to %d lines",
                    self.where,
                    str(e).strip() or type(e).__name__,
                    self.capacity,
                )
            self._failing = True
            return False
        if self._failing:
            log.info("pushing access lines to %s again", self.where)
            self._failing = False
        return True

    def _room(self) -> int:
        """How many lines ``max_queue_len`` lets us push now (LLEN at most once a second)."""
        if self.max_queue_len is None:
            return self.batch_size
        now = time.monotonic()
        full = self._known_len is None or self._known_len >= self.max_queue_len
        if full and now - self._llen_at >= self.llen_interval_s:
            self._llen_at = now
            self._known_len = int(self._client.llen(self.key))
        return max(0, self.max_queue_len - (self._known_len or 0))

    def _push_batch(self) -> bool:
        """Push one batch and report drops; True if there may be more to push."""
        room = self._room()
        with self._wake:
            n = min(len(self._buf), self.batch_size, room)
            if n == 0 and not self._unreported:
                return False
            batch = [self._buf.popleft() for _ in range(n)]
            self._fly_head, self._fly_n, self._fly_doomed = self._buf_head, n, 0
            self._buf_head += n
            drops = self._unreported
        pipe = self._client.pipeline(transaction=False)
        if batch:  # LPUSH a b c leaves c leftmost: RIGHT-end consumers get a, b, c
            pipe.lpush(self.key, *map(_encode, batch))
        if drops:
            pipe.incrby(DROPPED, drops)
        try:
            results = pipe.execute(raise_on_error=False)
            if batch and isinstance(results[0], Exception):
                raise results[0]
        except Exception:
            self._requeue(batch)
            raise
        with self._wake:
            self._fly_n = self._fly_doomed = 0
            if not isinstance(results[-1], Exception) and drops:
                self._unreported -= drops
            episode, span = (self._episode, self._episode_span) if batch else (0, (0.0, 0.0))
            if episode:
                self._episode = 0
            self._settled.notify_all()
        if batch:
            self._known_len = int(results[0])
        if episode:
            self._warn_dropped(episode, span, "the buffer was full")
        return n > 0

    def _requeue(self, batch: list[str]) -> None:
        """Put a failed batch back in front, dropping the lines that emit() doomed meanwhile."""
        with self._wake:
            doomed = self._fly_doomed
            if doomed < len(batch):  # nothing was popped from the buffer: still contiguous
                self._buf.extendleft(reversed(batch[doomed:]))
                self._buf_head = self._fly_head + doomed
            if doomed:
                self._note_drop(doomed)
            self._fly_n = self._fly_doomed = 0
            self._settled.notify_all()

    def _finish(self) -> None:
        """At close: count what could not be delivered, and say so once."""
        with self._wake:
            lost = len(self._buf)
            self._buf.clear()
            self._buf_head += lost
            if lost:
                self._note_drop(lost)
            episode, span, unreported = self._episode, self._episode_span, self._unreported
            self._settled.notify_all()
        if unreported and not self._failing:
            try:
                self._client.incrby(DROPPED, unreported)
            except Exception:  # best effort: Redis went away at the last moment
                pass
            else:
                with self._wake:
                    self._unreported -= unreported
        if episode:
            self._warn_dropped(episode, span, "the handler closed before Redis took them")

    def _warn_dropped(self, n: int, span: tuple[float, float], why: str) -> None:
        first, last = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in span)
        log.warning("dropped %d access-log lines emitted between %s and %s (%s; %d in total, "
                    "counted in %s); backfill that window from the web server's log file",
                    n, first, last, why, self._dropped, DROPPED)  # fmt: skip


# -- combined log lines from WSGI ----------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PLAIN = {b: chr(b) for b in range(0x20, 0x7F) if b not in b'"\\'} | {0x22: '\\"', 0x5C: "\\\\"}


def _raw(text: str) -> bytes:
    try:  # WSGI carries raw bytes as latin-1 text (PEP 3333)
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _escaped(text: str) -> str:
    """Escape like Apache: ``\\"``, ``\\\\``, other bytes outside printable ASCII as ``\\xhh``."""
    return "".join(_PLAIN.get(b) or f"\\x{b:02x}" for b in _raw(text)) or "-"


def access_line(
    environ: Mapping[str, Any], status: int | str, size: int | None, when: float | None = None
) -> str:
    """A combined-format line (``%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"``).

    ``status`` is an int or a WSGI status string (``"200 OK"``), ``size`` the body bytes sent
    (``0``/``None`` log as ``-``, as ``%b`` does), ``when`` epoch seconds (default now); the
    time is written in UTC. The request target is ``REQUEST_URI``/``RAW_URI`` when the server
    provides it, else rebuilt from ``SCRIPT_NAME``, ``PATH_INFO`` and ``QUERY_STRING``.
    """
    target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not target:
        path = _raw(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING", "")
        target = quote(path, safe="/;:@&=+$,!~*'()") + (f"?{query}" if query else "")
    method = environ.get("REQUEST_METHOD", "GET")
    request = f"{method} {target} {environ.get('SERVER_PROTOCOL', 'HTTP/1.1')}"
    code = int(str(status).split(None, 1)[0])
    t = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    stamp = f"{t.day:02d}/{_MONTHS[t.month - 1]}/{t.year}:{t:%H:%M:%S} +0000"
    user = _escaped(environ.get("REMOTE_USER") or "").replace(" ", "\\x20")
    return (
        f'{environ.get("REMOTE_ADDR") or "-"} - {user} [{stamp}] "{_escaped(request)}" {code} '
        f'{size or "-"} "{_escaped(environ.get("HTTP_REFERER", ""))}" '
        f'"{_escaped(environ.get("HTTP_USER_AGENT", ""))}"'
    )


# -- python -m pirus_bridge.loghandler: stdin -> q:loglines (Apache piped logs) -----------------


def main(argv: list[str] | None = None) -> int:
    """Push each stdin line onto the queue; flush and exit at EOF or SIGTERM."""
    p = argparse.ArgumentParser(
        prog="python -m pirus_bridge.loghandler",
        description="Push access-log lines from stdin onto a Redis list (Apache piped logs).",
    )
    default_url = os.environ.get("PIRUS_BRIDGE_REDIS_URL", "redis://127.0.0.1:6379/0")
    p.add_argument(
        "--url", default=default_url, help="Redis URL (default: $PIRUS_BRIDGE_REDIS_URL)"
    )
    p.add_argument("--key", default=LOGLINES, help="list to push onto (default: %(default)s)")
    p.add_argument("--capacity", type=int, default=100_000, help="lines held while Redis is away")
    p.add_argument("--max-queue-len", type=int, default=None, help="stop pushing above this")
    p.add_argument("--close-timeout", type=float, default=10.0, help="seconds to flush at exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pirus-bridge loghandler: %(message)s")
    handler = RedisLogHandler(
        args.url, key=args.key, capacity=args.capacity, max_queue_len=args.max_queue_len
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for raw in sys.stdin.buffer:
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            if line:
                handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
    except KeyboardInterrupt:
        pass
    finally:
        handler.flush(args.close_timeout)
        handler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
