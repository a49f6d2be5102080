"""A real HTTP statistics gatherer on 127.0.0.1 for tests and benchmarks.

Usage in a test module::

    from tests.gatherer import Gatherer, Reply

    @pytest.fixture
    def gatherer() -> Iterator[Gatherer]:
        with Gatherer() as g:
            yield g

or import the ready-made fixture under its name: ``from tests.gatherer import gatherer_fixture``.

The server speaks HTTP/1.1 with keep-alive (every response has a Content-Length), records every
request, answers 200 by default (or what an ``answer`` function returns), and plays scripted
replies first (:meth:`Gatherer.script`): a status, a :class:`Reply` (status, headers, body, a
delay before answering, or a drip: one byte at a time), or ``"close"`` to drop the connection
without answering. :meth:`Gatherer.stop` then :meth:`Gatherer.start` simulates an outage
(connection refused) and recovery on the same port. With ``tls`` (a server-side SSL context)
it speaks HTTPS.

``python -m tests.gatherer [--port N] [--no-record]`` serves until interrupted and prints its URL
(the benchmark runs it in a separate process so client and server do not share a GIL).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

CLOSE = "close"


@dataclass(frozen=True)
class Reply:
    """A scripted answer: status, extra headers, body, a delay (s) before answering, and
    ``drip``: when set, the answer is sent one byte every ``drip`` seconds."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str = b""
    delay: float = 0.0
    drip: float = 0.0


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the gatherer saw it. ``connection`` numbers the TCP connection (1, 2 …)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    time: float
    client_port: int
    connection: int

    @property
    def form(self) -> dict[str, str]:
        """The body decoded as ``application/x-www-form-urlencoded``."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


ScriptItem = Reply | int | str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    gatherer: Gatherer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that refused our certificate, or hung up: nothing to report


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestGatherer/1.0"
    timeout = 30  # an idle keep-alive connection is dropped after this
    server: _Server

    def setup(self) -> None:
        # The head and the body of an answer go in two writes: without this, Nagle's algorithm
        # holds the body back until the client's delayed ACK (~40 ms), as no real server does.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.server.gatherer.tls
        if tls is not None:  # the handshake here, in the connection's own thread
            self.request = tls.wrap_socket(self.request, server_side=True)
        super().setup()
        self.conn_id = self.server.gatherer._connected(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.gatherer._disconnected(self.connection)
            if self.server.gatherer.tls is not None:
                self.request.close()  # the server closes the plain socket it accepted only

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _serve(self) -> None:
        g = self.server.gatherer
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = ReceivedRequest(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=dict(self.headers.items()),
            body=body,
            time=time.time(),
            client_port=self.client_address[1],
            connection=self.conn_id,
        )
        index = g._record(request)
        reply = g._next_reply(request)
        try:
            self._answer(g, reply)
        finally:
            g._finished(index)

    def _answer(self, g: Gatherer, reply: Reply | str) -> None:
        if reply == CLOSE:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        assert isinstance(reply, Reply)
        if reply.delay and g._stopping.wait(reply.delay):
            self.close_connection = True
            return
        payload = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
        if reply.drip:
            self._drip(g, reply, payload)
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD" and reply.status not in (204, 304):
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    def _drip(self, g: Gatherer, reply: Reply, payload: bytes) -> None:
        """The whole answer, one byte at a time (a gatherer too slow to be waited for)."""
        answer = (f"HTTP/1.1 {reply.status} Slow\r\nContent-Length: {len(payload)}\r\n\r\n"
                  .encode("latin-1") + payload)
        self.close_connection = True
        try:
            for i in range(len(answer)):
                self.connection.sendall(answer[i : i + 1])
                if g._stopping.wait(reply.drip):
                    return
        except OSError:
            return

    do_GET = do_HEAD = do_POST = do_PUT = _serve


class Gatherer:
    """A scriptable HTTP gatherer on 127.0.0.1 (port 0 = a free port, kept across restarts)."""

    def __init__(self, path: str = "/counter/", port: int = 0, *, record: bool = True,
                 tls: ssl.SSLContext | None = None,
                 answer: Callable[[ReceivedRequest], Reply] | None = None) -> None:
        self.path = path
        self.port = port
        self.record = record
        self.tls = tls
        self.answer = answer
        self._lock = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._ends: dict[int, float] = {}  # request index → when its answer ended
        self._script: deque[Reply | str] = deque()
        self._default = Reply()
        self._open: set[socket.socket] = set()
        self._connections = 0
        self._received = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Gatherer:
        """Start listening (again, on the same port after :meth:`stop`)."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.gatherer = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection: clients now get connection refused."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Gatherer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT/counter/``."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        """Whether the gatherer is listening."""
        return self._server is not None

    # -- behaviour ------------------------------------------------------------------------

    def script(self, replies: Iterable[ScriptItem]) -> None:
        """Queue replies played one per request before the default applies again."""
        with self._lock:
            for item in replies:
                if isinstance(item, int):
                    item = Reply(status=item)
                elif isinstance(item, str) and item != CLOSE:
                    raise ValueError(f"script item {item!r}: use a Reply, a status or {CLOSE!r}")
                self._script.append(item)

    def set_default(
        self,
        status: int = 200,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | str = b"",
        delay: float = 0.0,
    ) -> None:
        """Set the reply given when the script is empty (initially a bare 200)."""
        with self._lock:
            self._default = Reply(status, dict(headers or {}), body, delay)

    # -- what was received ----------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def received(self) -> int:
        """How many requests arrived (counted even with ``record=False``)."""
        with self._lock:
            return self._received

    @property
    def connections(self) -> int:
        """How many TCP connections have been accepted since creation (or :meth:`clear`)."""
        with self._lock:
            return self._connections

    def clear(self) -> None:
        """Forget received requests and the connection count."""
        with self._lock:
            self._requests.clear()
            self._ends.clear()
            self._connections = 0
            self._received = 0

    def exchanges(self) -> list[tuple[ReceivedRequest, float]]:
        """Each recorded request with the time its answer ended (``inf`` while under way)."""
        with self._lock:
            return [(q, self._ends.get(i, float("inf"))) for i, q in enumerate(self._requests)]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``count`` requests arrived; raise ``TimeoutError`` after
        ``timeout`` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._received >= count, timeout):
                raise TimeoutError(f"{self._received} of {count} requests after {timeout}s")
            return list(self._requests)

    # -- called by handler threads --------------------------------------------------------

    def _connected(self, sock: socket.socket) -> int:
        with self._lock:
            self._open.add(sock)
            self._connections += 1
            return self._connections

    def _disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _record(self, request: ReceivedRequest) -> int:
        with self._lock:
            self._received += 1
            if self.record:
                self._requests.append(request)
            self._lock.notify_all()
            return len(self._requests) - 1 if self.record else -1

    def _finished(self, index: int) -> None:
        if index >= 0:
            with self._lock:
                self._ends[index] = time.time()

    def _next_reply(self, request: ReceivedRequest) -> Reply | str:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.answer is None:
                return self._default
            answer = self.answer
        return answer(request)


@pytest.fixture(name="gatherer")
def gatherer_fixture() -> Iterator[Gatherer]:
    """A running :class:`Gatherer`, stopped after the test."""
    with Gatherer() as g:
        yield g


def main() -> None:
    """Serve a gatherer until interrupted; print its URL on the first line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="do not keep requests")
    args = parser.parse_args()
    g = Gatherer(port=args.port, record=not args.no_record).start()
    print(g.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        g.stop()


if __name__ == "__main__":
    main()
