"""The storage backends the contract tests run on — huey's trick: one suite, every backend.

``single`` is the session's private redis-server; ``cluster`` the session's local Redis
Cluster (:mod:`tests.redis_cluster`). A contract test takes the ``backend`` fixture (see
``conftest.py``) and speaks to pirus-bridge only through its public face: the command line, a
config file with ``redis: {url, cluster}``, and a test gatherer.

What the code cannot do on a cluster yet is raised as :class:`ClusterGap`, so that a test marked
``@pytest.mark.cluster_gap("what is missing")`` is an expected failure on the cluster for that
reason only; any other failure is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
import yaml
from redis.exceptions import RedisClusterException

from tests.helpers import ROOT, config_data
from tests.redis_cluster import LocalCluster
from tests.redis_server import RedisServer

# What a cluster refuses, or redis-py's ClusterPipeline lacks, as the error names it.
_GAP_SIGNS = ("must map to the same key slot", "must map to the same slot", "CROSSSLOT",
              "ClusterPipeline", "RedisClusterException", "CrossSlotTransactionError")


class ClusterGap(Exception):
    """The code asked a Redis Cluster for what it cannot do: a script, transaction or pipeline
    over keys of several slots, or a pipeline call redis-py's ``ClusterPipeline`` lacks."""


class CliFailed(AssertionError):
    """A ``pirus-bridge`` command exited with an error."""


@dataclass
class Backend:
    """One backend: how to reach it, and how to act on its servers."""

    name: str
    servers: list[RedisServer]
    local_cluster: LocalCluster | None = None
    _clients: list[Any] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def cluster(self) -> bool:
        return self.local_cluster is not None

    @property
    def url(self) -> str:
        return self.local_cluster.url if self.local_cluster else self.servers[0].url

    def redis_section(self) -> dict[str, Any]:
        """The config's ``redis`` section for this backend."""
        return {"url": self.url, "cluster": self.cluster}

    def client(self) -> redis.Redis:
        """A client (closed after the test); on the cluster a ``RedisCluster``, which speaks
        the same commands for keys of one slot."""
        c: Any = self.local_cluster.client() if self.local_cluster else self.servers[0].client()
        self._clients.append(c)
        return cast(redis.Redis, c)

    def flush(self) -> None:
        if self.local_cluster:
            self.local_cluster.flush()
        else:
            c = self.servers[0].client()
            try:
                c.flushall()
            finally:
                c.close()

    def server_of(self, key: str) -> RedisServer:
        """The server that holds ``key``."""
        return self.local_cluster.node_of(key) if self.local_cluster else self.servers[0]

    def wait_ready(self) -> None:
        """After a server was restarted: until the backend serves every key again."""
        if self.local_cluster:
            self.local_cluster.wait_ok()

    def finish(self) -> None:
        """After the test: processes it started ended, clients closed, every server running and
        without persistence."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        for c in self._clients:
            c.close()
        if self.local_cluster:
            self.local_cluster.recover()
            return
        server = self.servers[0]
        if server.proc is None or server.proc.poll() is not None:
            server.start()
        server.no_aof()

    # -- the command line ----------------------------------------------------------------

    def write_config(self, path: Path, **sections: Any) -> Path:
        """A config file for the shipped EPrints mapping on this backend
        (:func:`tests.helpers.config_data`; batches of 200 lines unless ``counting`` says)."""
        counting = {"batch_size": 200, **sections.pop("counting", {})}
        data = config_data(self.redis_section(), mapping=str(ROOT / "mappings" / "eprints3.yaml"),
                           counting=counting, **sections)
        path.write_text(yaml.safe_dump(data))
        return path

    def cli(self, config: Path, *args: str, stdin: str | None = None) -> str:
        """``pirus-bridge --config CONFIG ARGS…`` in-process (click's CliRunner): its stdout."""
        from click.testing import CliRunner

        from pirus_bridge.cli import cli as command

        result = CliRunner().invoke(command, ["--config", str(config), *args], input=stdin)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            with self.gaps():
                raise result.exception
        if result.exit_code != 0:
            self._gap_in(result.output)
            raise CliFailed(f"{' '.join(args)}: exit {result.exit_code}: {result.output}")
        return result.stdout

    def cli_json(self, config: Path, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.cli(config, *args, "--json", stdin=stdin))

    def start_cli(self, config: Path, *args: str, stderr: Path) -> subprocess.Popen[bytes]:
        """``pirus-bridge`` as a subprocess, its stderr to a file; see :meth:`finished`. Killed
        after the test if still running."""
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pirus_bridge", "--config", str(config), *args],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, env=dict(os.environ),
            )  # fmt: skip
        self._procs.append(proc)
        return proc

    def finished(self, proc: subprocess.Popen[bytes], stderr: Path, timeout: float = 120) -> str:
        """Wait for a :meth:`start_cli` process: its stdout; a failure is a :class:`CliFailed`
        (or a :class:`ClusterGap` when the cluster refused what it asked)."""
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            text = stderr.read_text(errors="replace")
            self._gap_in(text)
            raise CliFailed(f"{proc.args}: exit {proc.returncode}: {text[-2000:]}")
        return out.decode()

    @contextmanager
    def gaps(self) -> Iterator[None]:
        """Raise what the cluster cannot do yet as :class:`ClusterGap`."""
        try:
            yield
        except RedisClusterException as e:
            if self.cluster:
                raise ClusterGap(f"{type(e).__name__}: {e}") from e
            raise
        except (TypeError, redis.ResponseError) as e:
            if self.cluster and any(sign in str(e) for sign in _GAP_SIGNS):
                raise ClusterGap(f"{type(e).__name__}: {e}") from e
            raise

    def _gap_in(self, text: str) -> None:
        if self.cluster:
            for sign in _GAP_SIGNS:
                if sign in text:
                    lines = [line for line in text.splitlines() if sign in line]
                    raise ClusterGap(lines[-1].strip())
