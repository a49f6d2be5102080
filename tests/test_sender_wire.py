"""The Sender's HTTP/1.1 exchanges against a server on 127.0.0.1 that answers with scripted bytes.

:class:`WireServer` plays exact response bytes (chunked bodies, Connection: close, a keep-alive
connection closed by the server while idle, a stall or a drip mid-answer …) so each rule about
reusing, retrying and timing out is checked on a real socket; the framing itself is
``http.client``'s. tests/gatherer.py covers the ordinary answers.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pirus_bridge.exceptions import DeliveryError
from pirus_bridge.sender import MAX_DRAIN_BYTES, Sender

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
CLOSE = "close"  # read the request, then close the connection without answering
RESET = "reset"  # read the request, then abort the connection (TCP RST)


@dataclass
class Stall:
    """Send ``first``, wait ``seconds`` (or until the server stops), then send ``rest``."""

    first: bytes
    seconds: float
    rest: bytes = b""


@dataclass
class ThenClose:
    """Send ``answer``, then close the connection (the server ending an idle keep-alive)."""

    answer: bytes


Action = bytes | str | Stall | ThenClose


@dataclass
class Received:
    connection: int  # 1 for the first TCP connection accepted, 2 for the next …
    head: bytes


@dataclass
class WireServer:
    """A TCP server on 127.0.0.1: reads each HTTP request and plays the next scripted action
    (the default answer, a bare 200, once the script is used up)."""

    script: list[Action] = field(default_factory=list)
    default: Action = OK
    received: list[Received] = field(default_factory=list)
    tls: ssl.SSLContext | None = None  # serve https with this server-side context

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed_by_server = threading.Event()
        self._connections = 0
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/counter/?url_ver=Z39.88-2004&rft_dat=Request"

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def wait_closed_by_server(self) -> None:
        assert self._closed_by_server.wait(5), "the server did not close the connection"

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            open_now = list(self._open)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # closing a socket does not wake a blocked accept()
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._connections += 1
                number = self._connections
                self._open.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _next(self) -> Action:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _serve(self, conn: socket.socket, number: int) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        with conn:
            buffer = b""
            while not self._stopping.is_set():
                while b"\r\n\r\n" not in buffer:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                with self._lock:
                    self.received.append(Received(number, head))
                if not self._play(conn, self._next()):
                    return

    def _play(self, conn: socket.socket, action: Action) -> bool:
        """Answer one request; False when the connection is closed afterwards."""
        try:
            if action == CLOSE:
                conn.shutdown(socket.SHUT_RDWR)
                return False
            if action == RESET:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return False
            if isinstance(action, Stall):
                conn.sendall(action.first)
                if self._stopping.wait(action.seconds):
                    return False
                conn.sendall(action.rest)
                return True
            if isinstance(action, ThenClose):
                conn.sendall(action.answer)
                conn.shutdown(socket.SHUT_RDWR)
                self._closed_by_server.set()
                return False
            assert isinstance(action, bytes)
            conn.sendall(action)
            return True
        except OSError:
            return False


@pytest.fixture
def server() -> Iterator[WireServer]:
    s = WireServer()
    yield s
    s.stop()


@pytest.fixture
def sender() -> Iterator[Sender]:
    with Sender(connect_timeout=0.5, read_timeout=0.3, concurrency=1) as s:
        yield s


def send_error(sender: Sender, url: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        sender.send(url)
    return info.value


def chunked(*chunks: bytes, status: bytes = b"200 OK", trailer: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return (b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            + b"0\r\n" + trailer + b"\r\n")


# -- framing -----------------------------------------------------------------------------------


def test_sender_wire_request_bytes(server: WireServer, sender: Sender) -> None:
    assert sender.send(server.url).status == 200
    (request,) = server.received
    lines = request.head.decode("ascii").split("\r\n")
    assert lines[0] == "GET /counter/?url_ver=Z39.88-2004&rft_dat=Request HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert any(line.startswith("User-Agent: pirus-bridge/") for line in lines)


def test_sender_wire_chunked_body_keeps_the_connection(server: WireServer,
                                                       sender: Sender) -> None:
    server.script = [chunked(b"accepted", b" twice"), chunked(b"x" * 5000)]
    for _ in range(3):
        assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 1, 1]


def test_sender_wire_chunked_error_body_with_extensions_and_trailer(
    server: WireServer, sender: Sender
) -> None:
    server.script = [b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
                     b"Retry-After: 9\r\n\r\n"
                     b"5;note=x\r\nunder\r\nC\r\n maintenance\r\n0\r\nX-Trailer: 1\r\n\r\n"]
    err = send_error(sender, server.url)
    assert (err.status, err.retryable, err.retry_after) == (503, True, 9.0)
    assert err.body_excerpt == "under maintenance"
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 1]  # the body was read to its end


def test_sender_wire_connection_close_header(server: WireServer, sender: Sender) -> None:
    server.script = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"]
    assert sender.send(server.url).status == 200
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 2]


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n", False),
    ],
)
def test_sender_wire_connection_reuse_follows_version_and_header(
    server: WireServer, sender: Sender, answer: bytes, reused: bool
) -> None:
    server.script = [answer]
    sender.send(server.url)
    sender.send(server.url)
    assert [r.connection for r in server.received] == ([1, 1] if reused else [1, 2])


def test_sender_wire_body_up_to_the_close(server: WireServer, sender: Sender) -> None:
    server.script = [ThenClose(b"HTTP/1.1 404 Not Found\r\n\r\nno such tracker")]
    err = send_error(sender, server.url)
    assert (err.status, err.retryable, err.body_excerpt) == (404, False, "no such tracker")
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 2]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n" + OK,  # an interim answer is skipped
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",  # bare LF line ends
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",  # no reason phrase
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",  # a 204 has no body
        b"HTTP/1.1 200 OK\r\nX-Long: a\r\n b\r\nContent-Length: 0\r\n\r\n",  # folded field
    ],
)
def test_sender_wire_lenient_answers_keep_the_connection(
    server: WireServer, sender: Sender, answer: bytes
) -> None:
    server.script = [answer]
    assert sender.send(server.url).status in (200, 204)
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 1]


def test_sender_wire_head_answer_has_no_body(server: WireServer) -> None:
    server.script = [b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"]
    with Sender(method="HEAD", read_timeout=0.3, concurrency=1) as s:
        assert s.send(server.url).status == 200
        assert s.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 1]


def test_sender_wire_long_body_is_not_drained(server: WireServer, sender: Sender) -> None:
    size = MAX_DRAIN_BYTES + 1
    server.script = [b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % size + b"e" * size]
    err = send_error(sender, server.url)
    assert err.status == 500 and err.body_excerpt == "e" * 300
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 2]  # closed rather than read


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (b"HTTP/2 200\r\n\r\n", "HTTP/2"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "SSH-2.0"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "IncompleteRead"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
         "IncompleteRead"),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, "interim answer 103"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
    ],
)
def test_sender_wire_malformed_answers_are_retryable(
    server: WireServer, sender: Sender, answer: bytes, fragment: str
) -> None:
    server.script = [ThenClose(answer)]
    err = send_error(sender, server.url)
    assert err.retryable and err.status is None
    assert err.reason.startswith("bad HTTP response: ") and fragment in err.reason
    assert sender.send(server.url).status == 200  # on a new connection


def test_sender_wire_answer_cut_short_is_retryable(server: WireServer,
                                                    sender: Sender) -> None:
    server.script = [ThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")]
    err = send_error(sender, server.url)
    assert err.retryable and err.reason.startswith("bad HTTP response: IncompleteRead(3 bytes")


# -- timeouts and dropped connections ----------------------------------------------------------


@pytest.mark.parametrize(
    "stall",
    [
        Stall(b"", 2.0, OK),  # nothing at all
        Stall(b"HTTP/1.1 200 OK\r\nContent-", 2.0),  # in the middle of the head
        Stall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", 2.0, b"cd"),  # mid-body
    ],
)
def test_sender_wire_read_timeout(server: WireServer, sender: Sender, stall: Stall) -> None:
    server.script = [stall]
    err = send_error(sender, server.url)
    assert (err.reason, err.retryable, err.status) == ("read timeout after 0.3s", True, None)
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 2]  # never reuse a half-read one


def test_sender_wire_idle_connection_closed_by_server_is_not_reused(
    server: WireServer, sender: Sender
) -> None:
    server.script = [ThenClose(OK)]
    assert sender.send(server.url).status == 200
    server.wait_closed_by_server()
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 2]  # the request went out once


def test_sender_wire_unasked_answer_on_an_idle_connection_is_not_taken(
    server: WireServer, sender: Sender
) -> None:
    """Some servers send a 408 before closing an idle keep-alive connection: that is not the
    answer to the next request."""
    server.script = [ThenClose(OK + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")]
    assert sender.send(server.url).status == 200
    server.wait_closed_by_server()
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 2]


@pytest.mark.parametrize("drop", [CLOSE, RESET])
def test_sender_wire_reused_connection_dropped_before_the_answer_is_tried_once_more(
    server: WireServer, sender: Sender, drop: str
) -> None:
    """The server closed the kept-alive connection as the request arrived (the race an idle
    check cannot see): no byte of an answer came, so it goes once more on a new connection."""
    server.script = [OK, drop]
    assert sender.send(server.url).status == 200
    assert sender.send(server.url).status == 200
    assert [r.connection for r in server.received] == [1, 1, 2]


def test_sender_wire_dropped_again_on_the_new_connection_fails(server: WireServer,
                                                              sender: Sender) -> None:
    server.script = [OK, CLOSE, CLOSE]
    sender.send(server.url)
    err = send_error(sender, server.url)
    assert err.retryable and err.status is None
    assert err.reason == "connection closed by gatherer without a response"
    assert [r.connection for r in server.received] == [1, 1, 2]


@pytest.mark.parametrize(
    ("drop", "reason"),
    [(CLOSE, "connection closed by gatherer without a response"),
     (RESET, "connection reset by gatherer")],
)
def test_sender_wire_new_connection_dropped_is_not_tried_again(
    server: WireServer, sender: Sender, drop: str, reason: str
) -> None:
    server.script = [drop]
    err = send_error(sender, server.url)
    assert (err.reason, err.retryable) == (reason, True)
    assert len(server.received) == 1


def test_sender_wire_dropped_after_part_of_the_answer_is_not_tried_again(
    server: WireServer, sender: Sender
) -> None:
    server.script = [OK, ThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nacc")]
    sender.send(server.url)
    err = send_error(sender, server.url)
    assert err.retryable and err.reason.startswith("bad HTTP response: IncompleteRead")
    assert len(server.received) == 2


# -- requests split in two ---------------------------------------------------------------------


def test_sender_wire_start_then_result(server: WireServer, sender: Sender) -> None:
    server.script = [Stall(b"", 0.1, OK)]
    exchange = sender.start(server.url)
    assert exchange.result().status == 200
    with pytest.raises(RuntimeError):
        exchange.result()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:{port}/counter/?a=b c", "http://127.0.0.1:{port}/counter/?a=\u00e9",
     "http://127.0.0.1:{port}/counter/?a=b\r\nX-Injected: 1"],
)
def test_sender_wire_unsendable_target_is_not_retryable(
    server: WireServer, sender: Sender, url: str
) -> None:
    err = send_error(sender, url.format(port=server.port))
    assert not err.retryable and err.reason.startswith("invalid gatherer URL")
    assert server.received == []


def test_sender_wire_user_agent_must_be_one_line() -> None:
    with pytest.raises(ValueError, match="control characters"):
        Sender(user_agent="x\r\nX-Injected: 1")


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[WireServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    s = WireServer(tls=context)
    yield s
    s.stop()


def test_sender_wire_https_keeps_the_connection(
    tls_server: WireServer, certificate: tuple[Path, Path]
) -> None:
    tls_server.script = [chunked(b"ok"), ThenClose(OK)]
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    with Sender(read_timeout=1, concurrency=1, ssl_context=trusted) as s:
        assert s.send(tls_server.url).status == 200
        assert s.send(tls_server.url).status == 200
        tls_server.wait_closed_by_server()
        assert s.send(tls_server.url).status == 200
    assert [r.connection for r in tls_server.received] == [1, 1, 2]
    assert b"Host: 127.0.0.1:%d" % tls_server.port in tls_server.received[0].head


def test_sender_wire_https_untrusted_certificate(tls_server: WireServer) -> None:
    with Sender(read_timeout=1, concurrency=1) as s:
        err = send_error(s, tls_server.url)
    assert err.reason == "TLS certificate not trusted: self-signed certificate"
    assert not err.retryable  # a setup to fix, not a message to retry
    assert tls_server.received == []
