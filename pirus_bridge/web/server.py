"""Run the HTTP app on ``http.listen`` in a background thread (uvicorn)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import uvicorn
from starlette.applications import Starlette

from pirus_bridge.config import HttpConfig
from pirus_bridge.exceptions import PirusBridgeError

log = logging.getLogger(__name__)


class HttpServer:
    """uvicorn serving one app in a thread of its own, started and stopped by ``serve``.

    ``http.listen`` may give port 0: :attr:`port` is then the port the system chose.
    """

    def __init__(self, app: Starlette, http: HttpConfig) -> None:
        host, port = http.host_port()
        ssl = {}
        if http.tls_cert_file is not None:
            ssl = {"ssl_certfile": str(http.tls_cert_file),
                   "ssl_keyfile": str(http.tls_key_file) if http.tls_key_file else None}
        self.config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False,
            lifespan="off", server_header=False, **ssl,  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.config.port)

    @property
    def scheme(self) -> str:
        return "https" if self.config.ssl_certfile else "http"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; return once the socket listens (raise if it cannot)."""
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise PirusBridgeError(
                    f"cannot serve HTTP on {self.config.host}:{self.config.port}: "
                    f"{self._error or 'the server stopped at start'}")
            if time.monotonic() > deadline:
                raise PirusBridgeError("the HTTP server did not start in time")
            time.sleep(0.02)
        log.info("HTTP on %s://%s:%d", self.scheme, self.config.host, self.port)

    def _run(self) -> None:
        # uvicorn installs signal handlers only in the main thread; serve owns those.
        try:
            asyncio.run(self.server.serve())
        except BaseException as e:  # reported by start(), or logged when it happens later
            self._error = e
            log.error("HTTP server stopped: %s", e)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
