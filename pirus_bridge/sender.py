"""HTTP delivery of ContextObjects to one statistics gatherer (IRUS tracker or alike).

One :class:`Sender` per gatherer, keeping up to ``concurrency`` keep-alive connections per origin.
The transport is a small HTTP/1.1 client on a plain (or TLS) socket. SPEC §9 asks for 2,000
events/s, and a general client costs more per message than everything else in delivery together:
``requests`` spends about 1.2 ms of CPU and urllib3 about 0.5 ms re-parsing and re-quoting our
already-encoded KEV URLs, and even the standard library's ``http.client`` spends some 150 µs,
most of it parsing the response head with ``email.parser`` (``bench/bench_sender.py``). A
gatherer's answer needs little: the status, ``Retry-After``, ``Location``, the body's framing
(``Content-Length``, chunked, or up to the close) and whether the connection stays open.

The little a pool needs is here too: LIFO reuse, a dropped-connection check before reuse,
separate connect and read timeouts, and one more try on a new connection when a kept-alive
connection turns out to be closed before any byte of the answer arrived (the gatherer closed it
while it was idle). Requests are never pipelined: one request at a time on a connection, so a
failure is always that one message's.

:meth:`Sender.send` returns a :class:`DeliveryResult` or raises
:class:`~pirus_bridge.exceptions.DeliveryError` classified as SPEC §6 asks: connection errors,
timeouts, 408, 429 and 5xx are retryable (honouring ``Retry-After``); any other status that is not
2xx is not. Redirects are followed by hand, and only to http(s) locations. :meth:`Sender.start`
does the same in two steps, so the caller can prepare its next message while the gatherer answers.
"""

from __future__ import annotations

import email.utils
import functools
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import NoReturn
from urllib.parse import urljoin, urlsplit

from pirus_bridge import __version__
from pirus_bridge.exceptions import DeliveryError

USER_AGENT = f"pirus-bridge/{__version__}"
METHODS = ("GET", "HEAD", "POST")
RETRYABLE_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER_S = 86400.0  # a gatherer asking for more than a day is not taken literally
MAX_REDIRECTS = 5
BODY_EXCERPT_CHARS = 300
MAX_HEAD_BYTES = 64 * 1024  # a longer response head is not a gatherer's answer
MAX_DRAIN_BYTES = 1024 * 1024  # a longer body is not read to its end: the connection is closed
_KEPT_BODY_BYTES = 4 * BODY_EXCERPT_CHARS  # enough UTF-8 for the excerpt
_RECV_BYTES = 65536
_MAX_LINE_BYTES = 8192  # a chunk-size or trailer line
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NO_BODY_STATUSES = frozenset({204, 304})
_HEAD_END = re.compile(rb"\n\r?\n")  # the empty line after the head (bare LF tolerated)
_STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?:[ \t](.*))?")
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")  # RFC 9110 token, lowercased
_HEX = re.compile(r"[0-9A-Fa-f]+")
_DIGITS = re.compile(r"[0-9]+")
# What a request target may not contain: spaces, controls, non-ASCII (KEV values arrive
# percent-encoded, so only a misconfigured URL has any).
_UNSENDABLE = re.compile(r"[^\x21-\x7e]")
_HAS_POLL = hasattr(select, "poll")
_ORIGIN_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")  # scheme://authority


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
    """A gatherer's answer: header names lowercased, the body cut to what an excerpt needs."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


class _BadResponse(Exception):
    """The bytes received are not a well-formed HTTP/1.x response (or it was cut short)."""


class _Dropped(Exception):
    """The connection ended before any byte of the response arrived."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Connection:
    """One connection to an origin and the bytes received on it that are not read yet.

    ``exchanges`` counts the answers read on it: a connection that served one before is a kept-
    alive one, which the gatherer may have closed while it sat idle in the pool.
    """

    __slots__ = ("sock", "exchanges", "_buffer", "_poller")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.exchanges = 0
        self._buffer = bytearray()
        # poll has no FD_SETSIZE limit; registered once, each check is one system call.
        self._poller = select.poll() if _HAS_POLL else None
        if self._poller is not None:
            self._poller.register(sock, select.POLLIN)

    def close(self) -> None:
        self.sock.close()

    def is_dropped(self) -> bool:
        """True when an idle connection cannot carry another exchange: the peer closed it, or
        sent something unasked (some servers send a 408 before closing an idle connection)."""
        if self._buffer:
            return True
        sock = self.sock
        try:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return True
            if self._poller is not None:
                return bool(self._poller.poll(0))
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    # -- reading an answer ---------------------------------------------------------------------

    def read_answer(self, method: str) -> tuple[_Answer, bool]:
        """Read one response to a ``method`` request; return it and whether the connection can
        carry another exchange. Interim 1xx responses are skipped.

        Raises :class:`_Dropped` when the connection ends before any byte of the response,
        :class:`_BadResponse`, ``TimeoutError`` (the read timeout) or ``OSError``.
        """
        minor, status, reason, headers = self._read_head(first=True)
        while 100 <= status < 200:
            if status == 101:
                raise _BadResponse("unexpected 101 Switching Protocols")
            minor, status, reason, headers = self._read_head(first=False)
        # HTTP/1.1 keeps the connection open unless told otherwise; HTTP/1.0 closes it unless
        # told otherwise.
        tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
        keep_alive = "close" not in tokens if minor else "keep-alive" in tokens
        transfer_encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if method == "HEAD" or status in _NO_BODY_STATUSES:
            body, complete = b"", True
        elif transfer_encoding is not None:
            if length is not None:  # RFC 9112 §6.3: chunked wins, and the connection is suspect
                keep_alive = False
            if transfer_encoding.rpartition(",")[2].strip().lower() == "chunked":
                body, complete = self._read_chunked()
            else:
                body, complete = self._read_to_close()
        elif length is not None:
            body, complete = self._read_length(_content_length(length))
        else:
            body, complete = self._read_to_close()
        return _Answer(status, reason, headers, body), keep_alive and complete

    def _receive(self) -> bool:
        """Append what the socket has to the buffer (waiting up to the read timeout); False at
        the end of the stream."""
        chunk = self.sock.recv(_RECV_BYTES)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def _read_head(self, *, first: bool) -> tuple[int, int, str, dict[str, str]]:
        buffer = self._buffer
        if first and not buffer:
            try:
                received = self._receive()
            except ConnectionResetError as e:
                raise _Dropped("connection reset by gatherer") from e
            if not received:
                raise _Dropped("connection closed by gatherer without a response")
        while True:
            while buffer.startswith((b"\r\n", b"\n")):  # RFC 9112 §2.2: ignored before a head
                del buffer[: 2 if buffer[0] == 13 else 1]
            end = _HEAD_END.search(buffer)
            if end is not None:
                break
            if len(buffer) > MAX_HEAD_BYTES:
                raise _BadResponse(f"response head longer than {MAX_HEAD_BYTES} bytes")
            if not self._receive():
                raise _BadResponse("connection closed by gatherer mid-response")
        head = buffer[: end.start()].decode("latin-1")
        del buffer[: end.end()]
        return _parse_head(head)

    def _read_line(self) -> str:
        buffer = self._buffer
        while (end := buffer.find(b"\n")) < 0:
            if len(buffer) > _MAX_LINE_BYTES:
                raise _BadResponse("chunk line too long")
            if not self._receive():
                raise _BadResponse("connection closed by gatherer mid-body")
        line = buffer[:end].decode("latin-1").rstrip("\r")
        del buffer[: end + 1]
        return line

    def _take(self, size: int) -> bytes:
        """The next ``size`` bytes of the body."""
        buffer = self._buffer
        while len(buffer) < size:
            if not self._receive():
                raise _BadResponse("connection closed by gatherer mid-body")
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def _read_length(self, size: int) -> tuple[bytes, bool]:
        if size > MAX_DRAIN_BYTES:  # keep the start for the excerpt; the rest is not read
            buffer = self._buffer
            while len(buffer) < _KEPT_BODY_BYTES and self._receive():
                pass
            return bytes(buffer[:_KEPT_BODY_BYTES]), False
        return self._take(size)[:_KEPT_BODY_BYTES], True

    def _read_chunked(self) -> tuple[bytes, bool]:
        kept = bytearray()
        total = 0
        while True:
            size_text = self._read_line().partition(";")[0].strip()  # extensions are ignored
            if not _HEX.fullmatch(size_text):
                raise _BadResponse(f"bad chunk size {size_text[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > MAX_DRAIN_BYTES:
                return bytes(kept), False
            data = self._take(size)
            if len(kept) < _KEPT_BODY_BYTES:
                kept += data[: _KEPT_BODY_BYTES - len(kept)]
            if self._read_line():
                raise _BadResponse("chunk data longer than its size")
        while self._read_line():  # trailer fields, ignored
            pass
        return bytes(kept), True

    def _read_to_close(self) -> tuple[bytes, bool]:
        """A body delimited by the end of the connection (which then cannot be reused)."""
        buffer = self._buffer
        while len(buffer) <= MAX_DRAIN_BYTES and self._receive():
            pass
        body = bytes(buffer[:_KEPT_BODY_BYTES])
        buffer.clear()
        return body, False


def _parse_head(head: str) -> tuple[int, int, str, dict[str, str]]:
    """Return ``(minor version, status, reason, headers)`` of a response head.

    Header names are lowercased; repeated fields are joined with ``, ``; folded lines continue
    the field before them; lines that are not fields are ignored, as lenient clients do.
    """
    lines = head.split("\n")
    match = _STATUS_LINE.fullmatch(lines[0].rstrip("\r"))
    if match is None:
        raise _BadResponse(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # obsolete line folding
            if name:
                headers[name] = f"{headers[name]} {line.strip()}".strip()
            continue
        field, colon, value = line.partition(":")
        name = field.lower()
        if not colon or not _FIELD_NAME.fullmatch(name):
            name = ""
            continue
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(match[1]), int(match[2]), (match[3] or "").strip(), headers


def _content_length(value: str) -> int:
    """The body length a ``Content-Length`` field gives (repeated equal values allowed)."""
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not _DIGITS.fullmatch(text := values.pop()):
        raise _BadResponse(f"bad Content-Length {value[:40]!r}")
    return int(text)


@functools.lru_cache(maxsize=64)
def _host_header(origin: Origin) -> str:
    scheme, host, port = origin
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return host if port == default else f"{host}:{port}"


_Wire = tuple[_Connection, Origin, bytes]  # the connection a request went out on, and the bytes


class Exchange:
    """One message's request, written to the gatherer; :meth:`result` reads the answer.

    Made by :meth:`Sender.start`. Until :meth:`result` is called the exchange holds its
    connection, so call it exactly once.
    """

    __slots__ = ("_sender", "_method", "_url", "_body", "_content_type", "_started", "_wire")

    def __init__(self, sender: Sender, method: str, url: str, body: bytes | None,
                 content_type: str | None) -> None:
        self._sender = sender
        self._method = method
        self._url = url
        self._body = body
        self._content_type = content_type
        self._started = time.perf_counter()
        self._wire: _Wire | None = sender._write(method, url, body, content_type)

    def result(self) -> DeliveryResult:
        """Wait for the answer; return the result on any 2xx, else raise ``DeliveryError``.
        Redirects are followed here."""
        sender, method, url, body = self._sender, self._method, self._url, self._body
        content_type = self._content_type
        wire = self._wire
        if wire is None:
            raise RuntimeError("the result of this exchange was already read")
        self._wire = None
        for redirects in range(MAX_REDIRECTS + 1):
            answer = sender._read(method, *wire)
            status = answer.status
            if 200 <= status < 300:
                return DeliveryResult(status, time.perf_counter() - self._started)
            location = answer.headers.get("location")
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
                method, body, content_type = "GET", None, None
            if redirects == MAX_REDIRECTS:
                break
            url = target
            wire = sender._write(method, url, body, content_type)
        raise DeliveryError(f"more than {MAX_REDIRECTS} redirects", status=status, retryable=False)


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
        if re.search(r"[\x00-\x1f\x7f]", user_agent):
            raise ValueError(f"user agent {user_agent!r} contains control characters")
        self.method = method
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.concurrency = max(1, concurrency)
        self._fixed_headers = (
            f"User-Agent: {user_agent}\r\nAccept: */*\r\nAccept-Encoding: identity\r\n"
        )
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
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
        return self.start(url, body=body, content_type=content_type).result()

    def start(
        self, url: str, *, body: bytes | None = None, content_type: str | None = None
    ) -> Exchange:
        """Write the request for one message and return without waiting for the answer.

        Raises ``DeliveryError`` when the request cannot be written (connection refused, an
        invalid URL …); otherwise :meth:`Exchange.result` gives the outcome, exactly as
        :meth:`send` would.
        """
        method = self.method
        if body is None and method == "POST":
            url, _, query = url.partition("?")
            body = query.encode("ascii")
            content_type = "application/x-www-form-urlencoded"
        elif body is not None:
            method = "POST"
        return Exchange(self, method, url, body, content_type)

    def send_xml_batch(self, url: str, xml_bytes: bytes) -> DeliveryResult:
        """POST one XML ``context-objects`` document (ctx-xml profile)."""
        return self.send(url, body=xml_bytes, content_type="application/xml; charset=utf-8")

    # -- one request ---------------------------------------------------------------------------

    def _request_bytes(
        self, method: str, origin: Origin, target: str, body: bytes | None,
        content_type: str | None,
    ) -> bytes:
        if _UNSENDABLE.search(target):
            raise DeliveryError(
                f"invalid gatherer URL target {target[:200]!r}: spaces, control or non-ASCII"
                " characters",
                retryable=False,
            )
        head = f"{method} {target} HTTP/1.1\r\nHost: {_host_header(origin)}\r\n"
        head += self._fixed_headers
        if body is None:
            return (head + "\r\n").encode("latin-1")
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body

    def _write(
        self, method: str, url: str, body: bytes | None, content_type: str | None
    ) -> _Wire:
        """Send one request on a pooled (or new) connection; return what :meth:`_read` needs."""
        origin, target = _split_url(url)
        request = self._request_bytes(method, origin, target, body, content_type)
        conn = self._checkout(origin)
        try:
            conn.sock.sendall(request)
        except TimeoutError as e:
            conn.close()
            raise DeliveryError(f"read timeout after {self.read_timeout:g}s") from e
        except OSError as e:
            conn.close()
            if not conn.exchanges:
                raise DeliveryError(_describe_exchange_error(e)) from e
            # A kept-alive connection the gatherer closed while idle: once more on a new one.
            conn = self._send_on_new_connection(origin, request)
        except BaseException:
            conn.close()
            raise
        return conn, origin, request

    def _send_on_new_connection(self, origin: Origin, request: bytes) -> _Connection:
        conn = self._connect(origin)
        try:
            conn.sock.sendall(request)
        except BaseException as e:
            conn.close()
            self._raise_as_delivery_error(e)
        return conn

    def _read(self, method: str, conn: _Connection, origin: Origin, request: bytes) -> _Answer:
        """Read the answer to ``request``; pool or close the connection; raise
        ``DeliveryError`` for anything that is not an HTTP answer."""
        try:
            try:
                answer, keep_alive = conn.read_answer(method)
            except _Dropped:
                if not conn.exchanges:  # a new connection: the gatherer hung up on this request
                    raise
                # A kept-alive connection closed before any byte of the answer: the gatherer
                # closed it while idle, so the request went nowhere. Once more on a new one.
                conn.close()
                conn = self._send_on_new_connection(origin, request)
                answer, keep_alive = conn.read_answer(method)
        except BaseException as e:
            conn.close()
            self._raise_as_delivery_error(e)
        conn.exchanges += 1
        if keep_alive:
            self._checkin(origin, conn)
        else:
            conn.close()
        return answer

    def _raise_as_delivery_error(self, exc: BaseException) -> NoReturn:
        """Raise what went wrong in an exchange as a (retryable) ``DeliveryError``; anything
        that is not a network or protocol failure (a bug, ``KeyboardInterrupt``) as it is."""
        if isinstance(exc, TimeoutError):
            raise DeliveryError(f"read timeout after {self.read_timeout:g}s") from exc
        if isinstance(exc, _Dropped):
            raise DeliveryError(exc.reason) from exc
        if isinstance(exc, _BadResponse):
            raise DeliveryError(f"bad HTTP response: {exc}") from exc
        if isinstance(exc, OSError):
            raise DeliveryError(_describe_exchange_error(exc)) from exc
        raise exc

    # -- the pool ------------------------------------------------------------------------------

    def _checkout(self, origin: Origin) -> _Connection:
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if not conn.is_dropped():
                    return conn
                conn.close()
        return self._connect(origin)

    def _checkin(self, origin: Origin, conn: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < self.concurrency:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except ConnectionRefusedError as e:
            raise DeliveryError("connection refused") from e
        except TimeoutError as e:
            raise DeliveryError(f"connect timeout after {self.connect_timeout:g}s") from e
        except socket.gaierror as e:
            raise DeliveryError(f"host name {host!r} not resolved: {e.strerror}") from e
        except OSError as e:
            raise DeliveryError(f"connection error: {e.strerror or e}") from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                if self._ssl_context is None:  # loading the CA store is slow: once per Sender
                    self._ssl_context = ssl.create_default_context()
                # The handshake runs here, under the connect timeout.
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(self.read_timeout)
        except TimeoutError as e:
            sock.close()
            raise DeliveryError(f"connect timeout after {self.connect_timeout:g}s") from e
        except ssl.SSLError as e:
            sock.close()
            raise DeliveryError(f"TLS error with {host}: {e}") from e
        except OSError as e:
            sock.close()
            raise DeliveryError(f"connection error: {e.strerror or e}") from e
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)


def _split_url(url: str) -> tuple[Origin, str]:
    """Return ``((scheme, host, port), request target)``; raise a non-retryable error.

    Every URL of a gatherer starts with the same scheme and authority, so that part is parsed
    once (:func:`_origin`); ``urlsplit`` of a whole KEV URL costs more than the rest of a send.
    """
    prefix = _ORIGIN_PREFIX.match(url)
    if prefix is None:
        raise DeliveryError(f"invalid gatherer URL {url!r}: not http(s)", retryable=False)
    origin = _origin(prefix.group())
    target = url[prefix.end() :].partition("#")[0].removesuffix("?")
    return origin, target if target.startswith("/") else f"/{target}"


@functools.lru_cache(maxsize=64)
def _origin(prefix: str) -> Origin:
    """The origin of a URL's ``scheme://authority`` part."""
    try:
        parts = urlsplit(prefix)
        port = parts.port
    except ValueError as e:
        raise DeliveryError(f"invalid gatherer URL {prefix!r}: {e}", retryable=False) from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"invalid gatherer URL {prefix!r}: not http(s)", retryable=False)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port


def _describe_exchange_error(exc: BaseException) -> str:
    """Name a failure during the exchange in a few words (retryable in every case)."""
    if isinstance(exc, ConnectionResetError):
        return "connection reset by gatherer"
    if isinstance(exc, BrokenPipeError | ConnectionAbortedError):
        return "connection aborted"
    return f"connection error: {exc}"


def _status_error(answer: _Answer) -> DeliveryError:
    """Classify a non-2xx answer: 408, 429 and 5xx are retryable, any other status is not."""
    status = answer.status
    reason = _status_reason(status, answer.reason)
    excerpt = answer.body[:_KEPT_BODY_BYTES].decode("utf-8", "replace")[:BODY_EXCERPT_CHARS]
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        header = answer.headers.get("retry-after")
        retry_after = parse_retry_after(header, time.time()) if header else None
        return DeliveryError(
            reason, status=status, retry_after=retry_after, retryable=True, body_excerpt=excerpt
        )
    return DeliveryError(reason, status=status, retryable=False, body_excerpt=excerpt)
