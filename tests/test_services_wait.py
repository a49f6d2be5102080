"""Long-running commands started before their Redis exists wait for it, and survive its loss.

Each service is started against a port where nothing listens yet; a private redis-server is
started there later, stopped mid-run and started again. The service keeps working throughout,
logs one line per change of state (not one per retry), and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from pirus_bridge.ingest import Ingester
from tests.gatherer import Gatherer, gatherer_fixture  # noqa: F401 - the fixture
from tests.helpers import ROOT, clf, make_config, wait_until
from tests.live_support import Process
from tests.redis_server import RedisServer, free_port
from tests.test_cli import write_config

SAMPLE = ROOT / "fixtures" / "logs" / "sample-eprints.log"
LOST = "unavailable ("  # the warning when Redis goes away
BACK = "is available again"


def _lines(day: int, n: int) -> list[str]:
    return [clf(f"{day:02d}/Oct/2026:10:{i:02d}:00 +0000", "/1234/1/paper.pdf",
                ip=f"192.0.2.{i + 1}") for i in range(n)]


class Scenario:
    """How to start one command and how to see that it did its work."""

    def __init__(self, tmp: Path, port: int, gatherer: Gatherer) -> None:
        self.tmp = tmp
        self.url = f"redis://127.0.0.1:{port}/0"
        self.gatherer = gatherer
        self.http_port = free_port()
        self.log = tmp / "access.log"
        self.log.write_text("")
        self.gatherers = {"irus": {"url": gatherer.url, "interval_s": 1}}

    def config(self) -> Path:
        return write_config(self.tmp, self.url, gatherers=self.gatherers,
                            http={"listen": f"127.0.0.1:{self.http_port}"})

    def feed(self, r: redis.Redis, round_: int) -> Callable[[], bool]:
        """Give the service work through Redis or its log; return "is it done?"."""
        raise NotImplementedError


class Push(Scenario):
    args = ("push",)

    def feed(self, r: redis.Redis, round_: int) -> Callable[[], bool]:
        log = self.tmp / f"round{round_}.log"
        log.write_text("".join(_lines(10 + round_, 3)))
        cfg = make_config(self.url, gatherers=self.gatherers)
        Ingester(cfg, r).ingest(str(log))
        return lambda: len(self.gatherer.requests) == 3 * round_


class Serve(Push):
    args = ("serve",)

    def feed(self, r: redis.Redis, round_: int) -> Callable[[], bool]:
        delivered = super().feed(r, round_)

        def ready() -> bool:
            try:
                answer = requests.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2)
            except requests.ConnectionError:
                return False
            return delivered() and answer.status_code == 200

        return ready


class Tail(Scenario):
    @property
    def args(self) -> tuple[str, ...]:
        return ("tail", str(self.log))

    def feed(self, r: redis.Redis, round_: int) -> Callable[[], bool]:
        with self.log.open("a") as f:
            f.write("".join(_lines(10 + round_, 3)))
        return lambda: int(r.get("u:objectviews") or 0) == 3 * round_


class Worker(Scenario):
    args = ("worker", "classifier")

    def feed(self, r: redis.Redis, round_: int) -> Callable[[], bool]:
        r.lpush("q:loglines", *[line.rstrip("\n") for line in _lines(10 + round_, 2)])
        return lambda: r.llen("q:objectviews") == 2 * round_


@pytest.mark.parametrize("scenario", [Push, Serve, Tail, Worker], ids=lambda s: s.__name__)
def test_service_waits_for_redis_and_survives_its_loss(
    scenario: type[Scenario], tmp_path: Path, gatherer: Gatherer, procs: list[Any]
) -> None:
    port = free_port()
    s = scenario(tmp_path, port, gatherer)
    service = Process(s.config(), *s.args)
    procs.append(service)
    assert wait_until(lambda: LOST in service.stderr, timeout=20), service.stderr
    assert service.proc.poll() is None  # waiting, not exited
    server = RedisServer(tmp_path / "redis", appendonly=True, port=port).start()
    try:
        r = server.client()
        done = s.feed(r, 1)
        assert wait_until(done, timeout=30), service.stderr
        assert service.stderr.count(BACK) == 1

        server.stop()  # Redis goes away mid-run …
        r.close()
        written, last = 0, 0.0

        def lost() -> bool:
            # A tail touches Redis only when it commits lines: after each pause in its log.
            nonlocal written, last
            if scenario is Tail and written < 20 and time.monotonic() - last > 1.5:
                last = time.monotonic()
                with s.log.open("a") as f:
                    f.write(clf(f"09/Oct/2026:10:00:{written:02d} +0000", "/1234/1/paper.pdf",
                                ip=f"198.51.100.{written + 1}"))
                written += 1
            return service.stderr.count(LOST) == 2

        assert wait_until(lost, timeout=20, interval=0.25), service.stderr
        time.sleep(0.5)  # a few retries of the loops, which must not be logged
        assert service.proc.poll() is None
        server.start()  # … and comes back with its data (appendonly)
        r = server.client()
        assert wait_until(lambda: service.stderr.count(BACK) == 2, timeout=30), service.stderr
        if scenario is Tail:  # the lines written during the outage, each counted once
            assert wait_until(lambda: int(r.get("u:objectviews") or 0) == 3 + written,
                              timeout=20), (written, r.get("u:objectviews"), service.stderr)
            r.decrby("u:objectviews", written)
        done = s.feed(r, 2)
        assert wait_until(done, timeout=30), service.stderr
        assert service.stop() == 0, service.stderr
        r.close()
    finally:
        server.stop()
    err = service.stderr
    assert err.count(LOST) == 2 and err.count(BACK) == 2, err
    assert "Traceback" not in err
