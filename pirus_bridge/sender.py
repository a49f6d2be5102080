"""HTTP delivery to one statistics gatherer, spoken by the standard library's ``http.client``.

One :class:`Sender` per gatherer keeps up to ``concurrency`` idle keep-alive connections per
origin (LIFO; one idle for a second or more is checked for a dropped connection before reuse).
``http.client`` frames the requests and parses the answers; this module adds what a gatherer on
a university network needs (SPEC §3, Transport):

* **Proxies** (which one: :mod:`pirus_bridge.proxy`): HTTPS goes through a ``CONNECT`` tunnel,
  plain HTTP in absolute form; ``http://user:password@proxy:port`` credentials go in
  ``Proxy-Authorization``.
* **TLS**: certificates are always verified, against ``ca_file`` when given (it replaces the
  system store, as ``curl --cacert`` does) or the system store (``SSL_CERT_FILE`` works).
* **Redirects** are followed only within a scheme or from ``http`` up to ``https``; never from
  ``https`` down to ``http`` (raw IPs would travel in clear), never to another scheme. A
  redirect that would lose the message is refused rather than counted as delivered: for
  GET/HEAD one whose target does not carry the same query, for POST a 301/302/303 (clients
  turn those into a GET without the body).
* **One deadline per exchange**: connect, TLS handshake, proxy tunnel, request, answer and any
  redirects all end by ``deadline`` seconds after the exchange started, however slowly the
  gatherer drips its answer; the pusher keeps it shorter than the outbox lease, so a message is
  never still being sent when another pusher may claim it.

Requests are never pipelined: one at a time on a connection, so an outcome is always that
message's. A kept-alive connection that turns out to be closed before any byte of the answer
arrived (the gatherer closed it while idle) gets the request once more on a new connection.

:meth:`Sender.start` writes a request and returns an :class:`Exchange`, so the caller can render
its next message while the gatherer answers; :meth:`Exchange.result` raises
:class:`~pirus_bridge.exceptions.DeliveryError` for anything but a 2xx, classified once, in
:func:`status_error`: 408, 429 and 5xx are retryable (with ``Retry-After``), other statuses not.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import io
import re
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urljoin, urlsplit

from pirus_bridge import __version__
from pirus_bridge.exceptions import DeliveryError
from pirus_bridge.proxy import Origin, Proxy, proxy_for, url_authority
from pirus_bridge.redact import redact_url, scrub

USER_AGENT = f"pirus-bridge/{__version__}"
METHODS = ("GET", "HEAD", "POST")
RETRYABLE_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER_S = 86400.0  # a gatherer asking for more than a day is not taken literally
MAX_REDIRECTS = 5
BODY_EXCERPT_CHARS = 300
MAX_BODY_BYTES = 64 * 1024  # kept of an answer's body (a Matomo bulk answer is far smaller)
MAX_DRAIN_BYTES = 1024 * 1024  # a longer body is not read to its end: the connection is closed
RECENTLY_USED_S = 1.0  # a connection idle for less is reused without a look
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_UNSENDABLE = re.compile(r"[^\x21-\x7e]")  # spaces, controls, non-ASCII in a request target
_TUNNEL_FAILED = re.compile(r"Tunnel connection failed: (\d{3})")



@dataclass(frozen=True, slots=True)
class Answer:
    """A gatherer's final answer (after redirects): status, header fields with lower-cased
    names, and the start of the body (up to ``MAX_BODY_BYTES``)."""

    status: int
    reason: str
    headers: Mapping[str, str] | http.client.HTTPMessage  # .get() ignores the case of names
    body: bytes


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """A gatherer accepted a message: its status, the seconds the exchange took, its body."""

    status: int
    elapsed: float
    body: bytes = b""


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


def status_text(status: int, fallback: str = "") -> str:
    """``HTTP 404 Not Found``: the status and its standard phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = fallback
    return f"HTTP {status} {phrase}".rstrip()


def excerpt(body: bytes) -> str:
    """The start of a body as text for the failure queue, secrets hidden."""
    return scrub(body[: 4 * BODY_EXCERPT_CHARS].decode("utf-8", "replace")[:BODY_EXCERPT_CHARS])


def status_error(answer: Answer, now: float | None = None) -> DeliveryError | None:
    """The one classification of an answer (SPEC §6): ``None`` for a 2xx; 408, 429 and 5xx are
    retryable (honouring ``Retry-After``); any other status is not."""
    status = answer.status
    if 200 <= status < 300:
        return None
    reason = status_text(status, answer.reason)
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        header = answer.headers.get("retry-after")
        when = time.time() if now is None else now
        retry_after = parse_retry_after(header, when) if header else None
        return DeliveryError(reason, status=status, retry_after=retry_after, retryable=True,
                             body_excerpt=excerpt(answer.body))
    return DeliveryError(reason, status=status, retryable=False, body_excerpt=excerpt(answer.body))


def _place(url: str) -> str:
    """A URL as an error names it: without its query (the message's own data, which would make
    every message's error different) and without credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an invalid URL)"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else f"{host}{parts.path}"


def redirect_target(method: str, url: str, status: int, location: str) -> tuple[str, str]:
    """Where a redirect leads and with which method, or a non-retryable ``DeliveryError`` when
    following it would send the message in clear, to a non-HTTP place, or lose it."""
    target = urljoin(url, location)
    shown = _place(target)
    scheme, new = urlsplit(url).scheme, urlsplit(target)
    if new.scheme not in ("http", "https"):
        raise DeliveryError(f"HTTP {status} redirect to a non-HTTP location {shown}",
                            status=status, retryable=False)
    if scheme == "https" and new.scheme == "http":
        raise DeliveryError(f"HTTP {status} redirect from https down to http refused ({shown}):"
                            " the message would travel in clear", status=status, retryable=False)
    if method == "POST":
        if status in (301, 302, 303):
            raise DeliveryError(f"HTTP {status} redirect would turn the POST into a GET without"
                                f" its body ({shown}): not delivered", status=status,
                                retryable=False)
        return target, method
    old_query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    if parse_qsl(new.query, keep_blank_values=True) != old_query:
        raise DeliveryError(f"HTTP {status} redirect drops the message's query ({shown}):"
                            " not delivered", status=status, retryable=False)
    return target, ("GET" if status == 303 else method)


# -- connections -----------------------------------------------------------------------------


class _DeadlineReader(io.RawIOBase):
    """What ``http.client`` reads an answer from: the socket's own file, each read bounded by
    the read timeout and by what is left of the exchange's deadline."""

    def __init__(self, sock: socket.socket, conn: _Bounded) -> None:
        self.sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open, as http.client's
        self._conn = conn

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()

    def readinto(self, buffer: Any) -> int | None:
        conn = self._conn
        conn.limit(self.sock)
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            if conn.deadline - time.monotonic() <= 0:
                raise _DeadlinePassed from None
            raise


class _DeadlinePassed(TimeoutError):
    """The exchange's overall deadline passed (not one read's timeout)."""


class _Source:
    """What ``http.client.HTTPResponse`` takes for a socket: it only asks it for a file."""

    __slots__ = ("_raw",)

    def __init__(self, raw: _DeadlineReader) -> None:
        self._raw = raw

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self._raw)


class _Bounded:
    """What the connections below add to ``http.client``'s: answers read under the deadline."""

    deadline = float("inf")  # time.monotonic() by which the exchange must end
    read_timeout = 20.0
    _timed: tuple[socket.socket | None, float] = (None, 0.0)  # a socket and its timeout

    def limit(self, sock: socket.socket) -> None:
        """Give ``sock`` the timeout its next send or read may take: the read timeout, or what
        is left of the deadline when that is less. (Set only when it changes: each setting is
        a system call, and most exchanges never come near their deadline.)"""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        timeout = min(self.read_timeout, left)
        if self._timed != (sock, timeout):
            sock.settimeout(timeout)
            self._timed = (sock, timeout)

    def bound(self) -> None:
        """Read every answer on this connection (a proxy's CONNECT answer too) under the
        deadline."""
        reader: Any = self._response
        self.response_class = reader

    def _response(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                  url: str | None = None) -> http.client.HTTPResponse:
        raw = _DeadlineReader(sock, self)
        return http.client.HTTPResponse(_Source(raw), debuglevel,  # type: ignore[arg-type]
                                        method=method, url=url)


class _HTTP(_Bounded, http.client.HTTPConnection):
    pass


class _HTTPS(_Bounded, http.client.HTTPSConnection):
    pass


class _Connection:
    """A pooled connection, how many answers it carried, and whether it speaks to a proxy in
    absolute form (plain HTTP through a proxy)."""

    __slots__ = ("http", "exchanges", "via_proxy", "idle_since")

    def __init__(self, conn: _HTTP | _HTTPS, via_proxy: Proxy | None) -> None:
        self.http = conn
        self.exchanges = 0
        self.via_proxy = via_proxy
        self.idle_since = 0.0

    def close(self) -> None:
        self.http.close()

    def is_dropped(self) -> bool:
        """True when an idle connection cannot carry another exchange: closed by the peer, or
        with unasked bytes waiting (some servers send a 408 before closing an idle one).
        Servers close idle connections after seconds, not at once: one idle for less than a
        second is not looked at (and should it be closed after all, the request goes once
        more on a new connection)."""
        sock = self.http.sock
        if sock is None:
            return True
        if time.monotonic() - self.idle_since < RECENTLY_USED_S:
            return False
        try:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return True
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True


@functools.lru_cache(maxsize=64)
def _host_header(origin: Origin) -> str:
    scheme, host, port = origin
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"


@functools.lru_cache(maxsize=64)
def _origin(prefix: str) -> tuple[Origin, str | None]:
    """The origin of a URL's ``scheme://authority`` part, and the ``Authorization`` its
    ``user:password@`` gives."""
    parts, port, auth = url_authority(prefix, "gatherer URL")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"invalid gatherer URL {redact_url(prefix)}: not http(s)",
                            retryable=False)
    default = 443 if parts.scheme == "https" else 80
    return (parts.scheme, parts.hostname, port or default), auth


_ORIGIN_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")  # scheme://authority


def _split_url(url: str) -> tuple[Origin, str | None, str]:
    """``(origin, Authorization or None, request target)``; a non-retryable error for a URL
    that cannot be sent. The origin part is parsed once per gatherer (``urlsplit`` of a whole
    KEV URL costs more than the rest of a send)."""
    prefix = _ORIGIN_PREFIX.match(url)
    if prefix is None:
        raise DeliveryError(f"invalid gatherer URL {redact_url(url)}: not http(s)",
                            retryable=False)
    origin, auth = _origin(prefix.group())
    target = url[prefix.end() :].partition("#")[0].removesuffix("?")
    target = target if target.startswith("/") else f"/{target}"
    if _UNSENDABLE.search(target):
        raise DeliveryError(f"invalid gatherer URL {_place(url)}: spaces, control or non-ASCII"
                            " characters", retryable=False)
    return origin, auth, target


# -- exchanges -------------------------------------------------------------------------------


class Exchange:
    """One message's request, written to the gatherer; :meth:`result` (or :meth:`answer`)
    reads what came back. Made by :meth:`Sender.start`; read it exactly once."""

    __slots__ = ("_sender", "_method", "_url", "_body", "_content_type", "_started",
                 "_deadline", "_wire")

    def __init__(self, sender: Sender, method: str, url: str, body: bytes | None,
                 content_type: str | None) -> None:
        self._sender = sender
        self._method = method
        self._url = url
        self._body = body
        self._content_type = content_type
        self._started = time.perf_counter()
        self._deadline = time.monotonic() + sender.deadline
        self._wire: tuple[_Connection, Origin] | None = sender._write(
            method, url, body, content_type, self._deadline)

    def answer(self) -> Answer:
        """The gatherer's final answer, whatever its status, after following the redirects
        :func:`redirect_target` allows; ``DeliveryError`` for anything that is not an answer
        (connection failure, timeout, deadline, a refused redirect)."""
        sender, method, url = self._sender, self._method, self._url
        wire = self._wire
        if wire is None:
            raise RuntimeError("this exchange's answer was already read")
        self._wire = None
        seen = {url}
        for hop in range(MAX_REDIRECTS + 1):
            answer = sender._read(method, self._deadline, *wire, self._replay(method, url))
            if answer.status not in REDIRECTS:
                return answer
            location = answer.headers.get("location")
            if not location:
                return answer
            url, method = redirect_target(method, url, answer.status, location)
            if hop == MAX_REDIRECTS or url in seen:
                break
            seen.add(url)
            body = self._body if method == "POST" else None
            wire = sender._write(method, url, body, self._content_type, self._deadline)
        raise DeliveryError(f"redirect loop (more than {MAX_REDIRECTS} redirects, or back to a"
                            " URL already visited)", status=answer.status, retryable=False)

    def result(self) -> DeliveryResult:
        """Wait for the answer; the result on any 2xx, else ``DeliveryError``."""
        answer = self.answer()
        error = status_error(answer)
        if error is not None:
            raise error
        return DeliveryResult(answer.status, time.perf_counter() - self._started, answer.body)

    def error(self) -> DeliveryError | None:
        """Wait for the answer; ``None`` on any 2xx, else what :meth:`result` would raise
        (transport failures are raised)."""
        return status_error(self.answer())

    def _replay(self, method: str, url: str) -> tuple[str, str, bytes | None, str | None]:
        body = self._body if method == "POST" else None
        return method, url, body, self._content_type


class Sender:
    """Sends messages to one gatherer over keep-alive connections; safe to share between threads.

    ``method`` is how a KEV URL is sent: GET (IRUS), HEAD (as EPrints does) or POST (the query as
    an ``application/x-www-form-urlencoded`` body to the URL without its query). ``deadline`` is
    the most an exchange may take in all (s). ``proxy`` is the gatherer's ``proxy`` setting;
    ``environ`` the environment to read proxy variables from (default: this process's).
    """

    def __init__(
        self,
        *,
        method: str = "GET",
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        deadline: float | None = None,
        concurrency: int = 4,
        user_agent: str = USER_AGENT,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        proxy: str | None = None,
    ) -> None:
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        if re.search(r"[\x00-\x1f\x7f]", user_agent):
            raise ValueError(f"user agent {user_agent!r} contains control characters")
        self.method = method
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline if deadline is not None else connect_timeout + read_timeout
        self.concurrency = max(1, concurrency)
        self.user_agent = user_agent
        self.proxy = proxy
        self._ca_file = ca_file
        self._ssl_context = ssl_context
        self._environment = urllib.request.getproxies_environment()
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

    def send(self, url: str, *, body: bytes | None = None, content_type: str | None = None
             ) -> DeliveryResult:
        """Deliver one message; the result on any 2xx, else ``DeliveryError``. With no ``body``
        the URL is sent with the configured method; a ``body`` is always POSTed."""
        return self.start(url, body=body, content_type=content_type).result()

    def start(self, url: str, *, body: bytes | None = None, content_type: str | None = None
              ) -> Exchange:
        """Write the request for one message and return without waiting for the answer.

        Raises ``DeliveryError`` when the request cannot be written (connection refused, an
        invalid URL …); otherwise the :class:`Exchange` gives the outcome.
        """
        method = self.method
        if body is None and method == "POST":
            url, _, query = url.partition("?")
            body = query.encode("ascii")
            content_type = "application/x-www-form-urlencoded"
        elif body is not None:
            method = "POST"
        return Exchange(self, method, url, body, content_type)

    def route(self, url: str) -> str:
        """How a URL is reached, for people: ``direct`` or ``via proxy host:port``."""
        origin, _, _ = _split_url(url)
        proxy = proxy_for(origin, self.proxy, self._environment)
        return "direct" if proxy is None else f"via proxy {proxy.host}:{proxy.port}"

    # -- one request -------------------------------------------------------------------------

    def _write(self, method: str, url: str, body: bytes | None, content_type: str | None,
               deadline: float, *, fresh: bool = False) -> tuple[_Connection, Origin]:
        """Send one request on a pooled connection (a new one when ``fresh``)."""
        origin, auth, target = _split_url(url)
        conn = self._connect(origin, deadline) if fresh else self._checkout(origin, deadline)
        try:
            self._put(conn, method, origin, auth, target, body, content_type, deadline)
        except (ConnectionError, http.client.HTTPException) as e:
            conn.close()
            if not conn.exchanges:
                self._raise_as_delivery_error(e, deadline)
            # A kept-alive connection the gatherer closed while idle: once more on a new one.
            conn = self._connect(origin, deadline)
            try:
                self._put(conn, method, origin, auth, target, body, content_type, deadline)
            except BaseException as again:
                conn.close()
                self._raise_as_delivery_error(again, deadline)
        except BaseException as e:
            conn.close()
            self._raise_as_delivery_error(e, deadline)
        return conn, origin

    def _put(self, conn: _Connection, method: str, origin: Origin, auth: str | None,
             target: str, body: bytes | None, content_type: str | None, deadline: float
             ) -> None:
        h = conn.http
        h.deadline = deadline
        if h.sock is not None:
            h.limit(h.sock)
        if conn.via_proxy is not None:  # plain HTTP through a proxy: the absolute form
            target = f"{origin[0]}://{_host_header(origin)}{target}"
        h.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        h.putheader("Host", _host_header(origin))
        h.putheader("User-Agent", self.user_agent)
        h.putheader("Accept", "*/*")
        h.putheader("Accept-Encoding", "identity")
        if auth is not None:
            h.putheader("Authorization", auth)
        if conn.via_proxy is not None and conn.via_proxy.authorization:
            h.putheader("Proxy-Authorization", conn.via_proxy.authorization)
        if body is not None:
            if content_type:
                h.putheader("Content-Type", content_type)
            h.putheader("Content-Length", str(len(body)))
        h.endheaders(body)

    def _read(self, method: str, deadline: float, conn: _Connection, origin: Origin,
              replay: tuple[str, str, bytes | None, str | None]) -> Answer:
        """Read the answer on ``conn``; pool or close the connection."""
        try:
            try:
                response = conn.http.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError):
                if not conn.exchanges:  # a new connection: the gatherer hung up on this request
                    raise
                # A kept-alive connection closed before any byte of the answer: the request
                # went nowhere. Once more on a new one.
                conn.close()
                conn, origin = self._write(*replay, deadline, fresh=True)
                response = conn.http.getresponse()
            answer, drained = _read_answer(response)
        except BaseException as e:
            conn.close()
            self._raise_as_delivery_error(e, deadline)
        conn.exchanges += 1
        if drained and not response.will_close and conn.http.sock is not None:
            self._checkin(origin, conn)
        else:
            conn.close()
        return answer

    def _raise_as_delivery_error(self, exc: BaseException, deadline: float) -> NoReturn:
        """Raise an exchange failure as a ``DeliveryError`` (retryable unless the certificate
        or the proxy's answer says the setup is wrong); anything that is not a network or
        protocol failure (a bug, ``KeyboardInterrupt``) as it is."""
        if isinstance(exc, DeliveryError):
            raise exc
        if isinstance(exc, _DeadlinePassed):
            raise DeliveryError(f"no complete answer within the {self.deadline:g}s deadline"
                                ) from exc
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise DeliveryError(f"TLS certificate not trusted: {exc.verify_message or exc}",
                                retryable=False) from exc
        if isinstance(exc, ssl.SSLError):
            raise DeliveryError(f"TLS error: {exc.reason or exc}") from exc
        if isinstance(exc, TimeoutError):
            if deadline - time.monotonic() <= 0:
                raise DeliveryError(f"no complete answer within the {self.deadline:g}s"
                                    " deadline") from exc
            raise DeliveryError(f"read timeout after {self.read_timeout:g}s") from exc
        if isinstance(exc, http.client.RemoteDisconnected):
            raise DeliveryError("connection closed by gatherer without a response") from exc
        if isinstance(exc, ConnectionResetError):
            raise DeliveryError("connection reset by gatherer") from exc
        if isinstance(exc, BrokenPipeError | ConnectionAbortedError):
            raise DeliveryError("connection aborted") from exc
        if isinstance(exc, http.client.InvalidURL):
            raise DeliveryError(f"invalid gatherer URL: {scrub(str(exc))}",
                                retryable=False) from exc
        if isinstance(exc, http.client.HTTPException):
            raise DeliveryError(f"bad HTTP response: {scrub(str(exc))[:200]}") from exc
        if isinstance(exc, OSError):
            tunnel = _TUNNEL_FAILED.match(str(exc))
            if tunnel:
                status = int(tunnel.group(1))
                retryable = status in RETRYABLE_STATUSES or status >= 500
                raise DeliveryError(f"proxy refused the tunnel: {status_text(status)}",
                                    status=status, retryable=retryable) from exc
            raise DeliveryError(f"connection error: {scrub(str(exc.strerror or exc))}") from exc
        raise exc

    # -- the pool ----------------------------------------------------------------------------

    def _checkout(self, origin: Origin, deadline: float) -> _Connection:
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if not conn.is_dropped():
                    return conn
                conn.close()
        return self._connect(origin, deadline)

    def _checkin(self, origin: Origin, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < self.concurrency:
                idle.append(conn)
                return
        conn.close()

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # loading a CA store is slow: once per Sender
            try:
                self._ssl_context = ssl.create_default_context(cafile=self._ca_file)
            except (OSError, ssl.SSLError) as e:
                raise DeliveryError(f"cannot read the CA file {self._ca_file}: {e}",
                                    retryable=False) from e
        return self._ssl_context

    def _connect(self, origin: Origin, deadline: float) -> _Connection:
        scheme, host, port = origin
        proxy = proxy_for(origin, self.proxy, self._environment)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeliveryError(f"no complete answer within the {self.deadline:g}s deadline")
        timeout = min(self.connect_timeout, left)
        peer = (host, port) if proxy is None else (proxy.host, proxy.port)
        conn: _HTTP | _HTTPS
        if scheme == "https":
            conn = _HTTPS(*peer, timeout=timeout, context=self._context())
            if proxy is not None:
                headers = {"Host": f"{_host_header(origin)}"}
                if proxy.authorization:
                    headers["Proxy-Authorization"] = proxy.authorization
                conn.set_tunnel(host, port, headers)
        else:
            conn = _HTTP(*peer, timeout=timeout)
        conn.deadline = deadline
        conn.read_timeout = self.read_timeout
        conn.bound()
        via = "" if proxy is None else f" by proxy {proxy.host}:{proxy.port}"
        try:
            conn.connect()  # TCP, then the CONNECT tunnel and the TLS handshake, in ``timeout``
        except ConnectionRefusedError as e:
            conn.close()
            raise DeliveryError(f"connection refused{via}") from e
        except socket.gaierror as e:
            conn.close()
            name = host if proxy is None else proxy.host
            raise DeliveryError(f"host name {name!r} not resolved: {e.strerror}") from e
        except TimeoutError as e:
            conn.close()
            if isinstance(e, _DeadlinePassed) or deadline - time.monotonic() <= 0:
                raise DeliveryError(f"no complete answer within the {self.deadline:g}s deadline"
                                    ) from e
            raise DeliveryError(f"connect timeout after {self.connect_timeout:g}s") from e
        except BaseException as e:
            conn.close()
            self._raise_as_delivery_error(e, deadline)
        return _Connection(conn, proxy if scheme == "http" else None)


def _read_answer(response: http.client.HTTPResponse) -> tuple[Answer, bool | None]:
    """The answer of a response, and whether its body was read to the end (a body longer than
    ``MAX_DRAIN_BYTES`` is not: the connection is then closed)."""
    status = response.status
    if status < 200:  # http.client skips 100 Continue; another 1xx is not a final answer
        raise http.client.HTTPException(f"unexpected interim answer {status}")
    headers = response.msg
    if response.length is not None and response.length <= MAX_DRAIN_BYTES:
        body = response.read()  # IncompleteRead when the answer is cut short
    else:  # chunked, up to the close, or too long to be worth reading to its end
        body = response.read(MAX_DRAIN_BYTES + 1)
    drained = len(body) <= MAX_DRAIN_BYTES and response.isclosed()
    if not drained:
        response.close()
    return Answer(status, response.reason or "", headers, body[:MAX_BODY_BYTES]), drained
