"""A scripted HTTP server on 127.0.0.1 for metadata-provider tests (real sockets, no mocks).

Each path gets a script of responses; the last one repeats. Every request is recorded so tests
can count what reached the server.

    with ScriptedHTTPServer() as server:
        server.script("/oai", [(500, b"", "text/plain"), (200, body, "text/xml")])
        provider = OaiPmhProvider(server.url("/oai"), ...)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

Response = tuple[int, bytes, str]  # status, body, content type


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    query: dict[str, list[str]]


class ScriptedHTTPServer:
    """An HTTP server bound to 127.0.0.1 on a free port, answering from per-path scripts."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._scripts: dict[str, list[Response]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                status, body, ctype = outer._next(parts.path, parse_qs(parts.query))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def _next(self, path: str, query: dict[str, list[str]]) -> Response:
        with self._lock:
            self.requests.append(Recorded(path, query))
            script = self._scripts.get(path)
            if not script:
                return 404, b"not found", "text/plain"
            return script.pop(0) if len(script) > 1 else script[0]

    def script(self, path: str, responses: list[Response]) -> None:
        """Answer requests to ``path`` with ``responses`` in order, repeating the last one."""
        with self._lock:
            self._scripts[path] = list(responses)

    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        with self._lock:
            return sum(1 for rec in self.requests if rec.path == path)

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def __enter__(self) -> ScriptedHTTPServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
