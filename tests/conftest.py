"""Shared fixtures: one private redis-server per test session, flushed before each test; a
private three-master Redis Cluster, started the first time a test asks for it; and the
``backend`` fixture that runs a contract test on each (``tests/backends.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.backends import Backend, ClusterGap
from tests.redis_cluster import LocalCluster
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAPPINGS = ROOT / "mappings"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster_gap(reason): what the code cannot do on Redis Cluster yet; the test's cluster "
        "run is an expected failure when the cluster refuses it (tests.backends.ClusterGap)",
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis_server.client()
    client.flushall()
    yield redis_server.url
    client.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def serve_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``serve_api(cfg, r)``: the COUNTER API of ``cfg`` on a real HttpServer, its clock set
    (``tests.r51_support.api_servers``)."""
    from tests.r51_support import api_servers

    yield from api_servers(monkeypatch)


@pytest.fixture
def procs() -> Iterator[list]:
    """``tests.live_support.Process`` objects a test starts; any still running at the end are
    killed."""
    started: list = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters on free ports, for the whole session (started on first use)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(redis_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The session's cluster, emptied before the test; every node running and without
    persistence after it."""
    redis_cluster.flush()
    yield redis_cluster
    redis_cluster.recover()


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each contract test runs once per backend (huey's trick: one suite, every backend)."""
    if request.param == "single":
        request.getfixturevalue("redis_url")  # flushed
        b = Backend("single", [request.getfixturevalue("redis_server")])
    else:
        local: LocalCluster = request.getfixturevalue("cluster")
        gap = request.node.get_closest_marker("cluster_gap")
        if gap is not None:
            request.applymarker(pytest.mark.xfail(reason=f"not on Redis Cluster yet: "
                                                  f"{gap.args[0]}", raises=ClusterGap,
                                                  strict=False))
        b = Backend("cluster", local.nodes, local)
    yield b
    b.finish()
