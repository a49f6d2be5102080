"""A real HTTP proxy on 127.0.0.1, as a campus network's egress proxy: ``CONNECT`` tunnels for
HTTPS and absolute-form requests for plain HTTP, optionally asking for ``Proxy-Authorization``.

It forwards only to 127.0.0.1 (tests never reach beyond loopback) and records what it saw:
each ``CONNECT`` target and each plain request line, with the ``Proxy-Authorization`` sent.
A tunnel is a byte pipe, so TLS inside it is end to end: the proxy sees no message.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import urlsplit

# The environment variables that choose a proxy; tests start without any of them.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                   "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # host:port for CONNECT, the absolute URL otherwise
    authorization: str | None


@dataclass
class Proxy:
    """``credentials`` (``user:password``) makes it answer 407 to requests without them;
    ``refuse`` (a status) makes it refuse every tunnel with that status."""

    credentials: str | None = None
    refuse: int | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, credentials: str) -> str:
        return f"http://{credentials}@127.0.0.1:{self.port}"

    def __enter__(self) -> Proxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            open_now = list(self._sockets)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in list(self._threads):
            thread.join(5)

    # -- serving -----------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._spawn(self._serve, self._keep(client))

    def _serve(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            head = _read_head(reader)
            if head is None:
                return
            method, target, headers = head
            auth = headers.get("proxy-authorization")
            with self._lock:
                self.seen.append(Seen(method, target, auth))
            if self.credentials is not None and auth != _basic(self.credentials):
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                               b"Proxy-Authenticate: Basic realm=\"campus\"\r\n"
                               b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if method == "CONNECT":
                self._tunnel(client, reader, target)
            else:
                self._forward(client, reader, method, target, headers)
        except OSError:
            pass
        finally:
            client.close()

    def _tunnel(self, client: socket.socket, reader: BinaryIO, target: str) -> None:
        host, _, port = target.rpartition(":")
        if self.refuse is not None or host != "127.0.0.1":
            status = self.refuse or 403
            client.sendall(b"HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n\r\n" % status)
            return
        upstream = self._keep(socket.create_connection((host, int(port)), timeout=5))
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._spawn(_pipe, upstream, client)
        _pipe(client, upstream)

    def _forward(self, client: socket.socket, reader: BinaryIO, method: str, target: str,
                 headers: dict[str, str]) -> None:
        """Plain HTTP: the request goes on as it came (the test gatherer reads absolute-form
        targets); later requests on the connection are recorded on their way through."""
        parts = urlsplit(target)
        if parts.hostname != "127.0.0.1" or parts.port is None:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = self._keep(socket.create_connection((parts.hostname, parts.port), timeout=5))
        upstream.settimeout(None)
        self._spawn(_pipe, upstream, client)
        _send_request(upstream, reader, method, target, headers)
        while True:
            head = _read_head(reader)
            if head is None:
                break
            method, target, headers = head
            with self._lock:
                self.seen.append(Seen(method, target, headers.get("proxy-authorization")))
            _send_request(upstream, reader, method, target, headers)
        upstream.shutdown(socket.SHUT_WR)


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _read_head(reader: BinaryIO) -> tuple[str, str, dict[str, str]] | None:
    line = reader.readline(65536)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        field_line = reader.readline(65536).decode("latin-1")
        if field_line in ("\r\n", "\n", ""):
            break
        name, _, value = field_line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _send_request(upstream: socket.socket, reader: BinaryIO, method: str, target: str,
                  headers: dict[str, str]) -> None:
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k != "proxy-authorization"]
    body = reader.read(int(headers.get("content-length", 0) or 0))
    upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
