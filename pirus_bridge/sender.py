"""HTTP delivery of ContextObjects to one statistics gatherer (IRUS tracker or alike).

One :class:`Sender` per gatherer, keeping up to ``concurrency`` keep-alive connections per origin.
The transport is the standard library's ``http.client``: per message, ``requests`` spends about
1.2 ms of CPU and urllib3 about 0.5 ms re-parsing and re-quoting our already-encoded KEV URLs,
against 0.2 ms for http.client (``bench/bench_sender.py``), and SPEC §9 asks for 2,000 events/s.
The little a pool needs is here: LIFO reuse, a dropped-connection check before reuse, separate
connect and read timeouts.

:meth:`Sender.send` returns a :class:`DeliveryResult` or raises
:class:`~pirus_bridge.exceptions.DeliveryError` classified as SPEC §6 asks: connection errors,
timeouts, 408, 429 and 5xx are retryable (honouring ``Retry-After``); any other status that is not
2xx is not. Redirects are followed by hand, and only to http(s) locations.
"""

from __future__ import annotations

import email.utils
import http.client
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

from pirus_bridge import __version__
from pirus_bridge.exceptions import DeliveryError

USER_AGENT = f"pirus-bridge/{__version__}"
METHODS = ("GET", "HEAD", "POST")
RETRYABLE_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER_S = 86400.0  # a gatherer asking for more than a day is not taken literally
MAX_REDIRECTS = 5
BODY_EXCERPT_CHARS = 300
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """A gatherer accepted a message: its HTTP status and the time the exchange took (s)."""

    status: int
    elapsed: float


def parse_retry_after(value: str, now: float) -> float | None:
    """Return the delay in seconds a ``Retry-After`` header asks for, or ``None`` if unreadable.

    Accepts delta-seconds (``7``) and an HTTP-date (``Wed, 21 Oct 2015 07:28:00 GMT``, counted from
    ``now``, epoch seconds); the result is clamped to ``[0, MAX_RETRY_AFTER_S]``.
    """
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _status_reason(status: int, fallback: str | None) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = fallback or ""
    return f"HTTP {status} {phrase}".rstrip()


Origin = tuple[str, str, int]  # scheme, host, port


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


def _is_dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle keep-alive connection was closed by the peer (readable = EOF or junk)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):  # no FD_SETSIZE limit
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Sender:
    """Sends messages to one gatherer over keep-alive connections.

    ``method`` is how a KEV URL is sent: GET (IRUS), HEAD (as EPrints does) or POST (the query
    as an ``application/x-www-form-urlencoded`` body to the URL without its query). Safe to share
    between threads; up to ``concurrency`` idle connections per origin are kept open.
    """

    def __init__(
        self,
        *,
        method: str = "GET",
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        concurrency: int = 4,
        user_agent: str = USER_AGENT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        self.method = method
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.concurrency = max(1, concurrency)
        self._headers = {"User-Agent": user_agent, "Accept": "*/*"}
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections; connections in use close when their exchange ends."""
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def send(
        self, url: str, *, body: bytes | None = None, content_type: str | None = None
    ) -> DeliveryResult:
        """Deliver one message; return the result on any 2xx, else raise ``DeliveryError``.

        With no ``body`` the URL is sent with the configured method; a ``body`` is always POSTed
        with ``content_type``.
        """
        method = self.method
        headers = self._headers
        if body is None and method == "POST":
            url, _, query = url.partition("?")
            body = query.encode("ascii")
            content_type = "application/x-www-form-urlencoded"
        elif body is not None:
            method = "POST"
        if content_type:
            headers = {**headers, "Content-Type": content_type}
        return self._exchange(method, url, body, headers)

    def send_xml_batch(self, url: str, xml_bytes: bytes) -> DeliveryResult:
        """POST one XML ``context-objects`` document (ctx-xml profile)."""
        return self.send(url, body=xml_bytes, content_type="application/xml; charset=utf-8")

    def _exchange(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> DeliveryResult:
        started = time.perf_counter()
        for _ in range(MAX_REDIRECTS + 1):
            answer = self._request(method, url, body, headers)
            status = answer.status
            if 200 <= status < 300:
                return DeliveryResult(status, time.perf_counter() - started)
            location = answer.headers.get("Location")
            if status not in _REDIRECTS or not location:
                raise _status_error(answer)
            target = urljoin(url, location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise DeliveryError(
                    f"HTTP {status} redirect to a non-HTTP location {target!r}",
                    status=status,
                    retryable=False,
                )
            if status == 303 and method != "HEAD":
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k != "Content-Type"}
            url = target
        raise DeliveryError(f"more than {MAX_REDIRECTS} redirects", status=status, retryable=False)

    def _request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> _Answer:
        origin, target = _split_url(url)
        conn = self._checkout(origin)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except TimeoutError as e:
            conn.close()
            raise DeliveryError(f"read timeout after {self.read_timeout:g}s") from e
        except http.client.RemoteDisconnected as e:
            conn.close()
            raise DeliveryError("connection closed by gatherer without a response") from e
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise DeliveryError(_describe_exchange_error(e)) from e
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._checkin(origin, conn)
        return _Answer(response.status, response.reason, response.headers, data)

    def _checkout(self, origin: Origin) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if not _is_dropped(conn):
                    return conn
                conn.close()
        return self._connect(origin)

    def _checkin(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < self.concurrency:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, origin: Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            if self._ssl_context is None:  # loading the CA store is slow: once per Sender
                self._ssl_context = ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except ConnectionRefusedError as e:
            raise DeliveryError("connection refused") from e
        except TimeoutError as e:
            raise DeliveryError(f"connect timeout after {self.connect_timeout:g}s") from e
        except socket.gaierror as e:
            raise DeliveryError(f"host name {host!r} not resolved: {e.strerror}") from e
        except ssl.SSLError as e:
            raise DeliveryError(f"TLS error with {host}: {e}") from e
        except OSError as e:
            raise DeliveryError(f"connection error: {e.strerror or e}") from e
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


def _split_url(url: str) -> tuple[Origin, str]:
    """Return ``((scheme, host, port), request target)``; raise a non-retryable error."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise DeliveryError(f"invalid gatherer URL {url!r}: {e}", retryable=False) from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"invalid gatherer URL {url!r}: not http(s)", retryable=False)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname, port), target


def _describe_exchange_error(exc: BaseException) -> str:
    """Name a failure during the exchange in a few words (retryable in every case)."""
    if isinstance(exc, ConnectionResetError):
        return "connection reset by gatherer"
    if isinstance(exc, BrokenPipeError | ConnectionAbortedError):
        return "connection aborted"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response: {type(exc).__name__} {exc}".rstrip()
    return f"connection error: {exc}"


def _status_error(answer: _Answer) -> DeliveryError:
    """Classify a non-2xx answer: 408, 429 and 5xx are retryable, any other status is not."""
    status = answer.status
    reason = _status_reason(status, answer.reason)
    excerpt = answer.body[: BODY_EXCERPT_CHARS * 4].decode("utf-8", "replace")[:BODY_EXCERPT_CHARS]
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        header = answer.headers.get("Retry-After")
        retry_after = parse_retry_after(header, time.time()) if header else None
        return DeliveryError(
            reason, status=status, retry_after=retry_after, retryable=True, body_excerpt=excerpt
        )
    return DeliveryError(reason, status=status, retryable=False, body_excerpt=excerpt)
