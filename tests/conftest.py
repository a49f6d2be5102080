"""Shared fixtures: one private redis-server per test session, flushed before each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAPPINGS = ROOT / "mappings"


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
