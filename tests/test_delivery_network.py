"""Pushing through a campus network's egress proxy to an HTTPS gatherer with a private CA; an
untrusted certificate and an https → http downgrade refused without losing anything; a
gatherer that drips its answers survived without a message being sent twice at once.

Real servers on 127.0.0.1 (tests/gatherer.py, tests/proxy.py, certificates from tests/tls.py);
a fake clock except in the drip test, where leases, deadlines and backoff run in real time.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from pirus_bridge.cli import cli
from pirus_bridge.outbox import Outbox
from pirus_bridge.pusher import Pusher
from tests.delivery_support import (
    FakeClock,
    delivered_once,
    delivery_config,
    enqueue,
    event_key,
    per_event,
    write_config_file,
)
from tests.gatherer import Gatherer, Reply
from tests.proxy import PROXY_VARIABLES, Proxy
from tests.tls import Authority, ServerCert, issue, make_authority

N = 30


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, ServerCert]:
    folder = tmp_path_factory.mktemp("pki")
    campus = make_authority(folder, "campus-ca")
    return campus, issue(campus, folder)


@pytest.fixture
def tls_gatherer(pki: tuple[Authority, ServerCert]) -> Iterator[Gatherer]:
    with Gatherer(tls=pki[1].server_context()) as g:
        yield g


def pusher_for(redis_url: str, r: redis.Redis, url: str, clock: Any = time.time,
               **overrides: Any) -> Pusher:
    cfg = delivery_config(redis_url, url, **overrides)
    return Pusher(cfg, r, cfg.gatherers["irus"], clock=clock)


def test_push_through_the_proxy_to_an_https_gatherer_with_a_private_ca(
    redis_url: str, r: redis.Redis, tls_gatherer: Gatherer, pki: tuple[Authority, ServerCert],
    tmp_path: Path,
) -> None:
    with Proxy() as proxy:
        settings = {"proxy": proxy.url, "tls": {"ca_file": str(pki[0].cert_file)}}
        pusher = pusher_for(redis_url, r, tls_gatherer.url, **settings)
        enqueue(pusher.cfg, r, tmp_path, N)
        config = write_config_file(tmp_path / "pirus-bridge.yaml", redis_url, tls_gatherer.url,
                                   **settings)
        [(msg_id, _)] = Outbox(r, "irus").ids("pending", 1)
        shown = CliRunner().invoke(cli, ["--config", str(config), "outbox", "show", msg_id])
        assert f"route        via proxy 127.0.0.1:{proxy.port}" in shown.stdout
        try:
            result = pusher.push_once()
        finally:
            pusher.close()
    assert (result.sent, result.failed) == (N, 0)
    assert delivered_once(tls_gatherer, N)
    assert {(s.method, s.target) for s in proxy.seen} == {
        ("CONNECT", f"127.0.0.1:{tls_gatherer.port}")}  # tunnels only: the data is end to end


def test_untrusted_certificate_pauses_the_gatherer_and_loses_nothing(
    redis_url: str, r: redis.Redis, tls_gatherer: Gatherer, pki: tuple[Authority, ServerCert],
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    pusher = pusher_for(redis_url, r, tls_gatherer.url, clock=clock, batch_size=20)
    enqueue(pusher.cfg, r, tmp_path, N)
    box = Outbox(r, "irus")
    try:
        result = pusher.push_once()
    finally:
        pusher.close()
    assert (result.sent, result.failed, result.circuit) == (0, 0, "open")
    assert result.paused_reason is not None
    assert "TLS certificate not trusted: self-signed certificate in certificate chain" in \
        result.paused_reason
    assert tls_gatherer.received == 0
    stats = box.stats(clock())
    assert (stats["pending"], stats["failed"]) == (N, 0)

    # The admin sets tls.ca_file: the next probe gets through and the backlog follows.
    fixed = pusher_for(redis_url, r, tls_gatherer.url, clock=clock, batch_size=20,
                       tls={"ca_file": str(pki[0].cert_file)})
    clock.advance(61)
    try:
        totals = 0
        for _ in range(5):
            totals += fixed.push_once().sent
    finally:
        fixed.close()
    assert totals == N and delivered_once(tls_gatherer, N)


def test_a_downgrade_to_http_pauses_the_gatherer_and_sends_nothing_in_clear(
    redis_url: str, r: redis.Redis, tls_gatherer: Gatherer, pki: tuple[Authority, ServerCert],
    tmp_path: Path,
) -> None:
    with Gatherer() as plain:
        tls_gatherer.answer = lambda q: Reply(301, headers={
            "Location": plain.url + "?" + "&".join(f"{k}={v}" for k, v in q.query.items())})
        clock = FakeClock()
        pusher = pusher_for(redis_url, r, tls_gatherer.url, clock=clock, batch_size=20,
                            tls={"ca_file": str(pki[0].cert_file)})
        enqueue(pusher.cfg, r, tmp_path, N)
        try:
            result = pusher.push_once()
        finally:
            pusher.close()
        assert plain.received == 0
    assert (result.sent, result.failed, result.circuit) == (0, 0, "open")
    assert result.paused_reason is not None and "down to http refused" in result.paused_reason
    assert Outbox(r, "irus").stats(clock())["pending"] == N


def test_a_dripping_gatherer_never_has_one_message_sent_twice_at_once(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """Two pushers, a 3 s lease, a 1 s deadline; the gatherer drips its first answers a byte
    every 0.2 s (each read is quick; the whole answer would take ~9 s, three leases). The
    deadline ends those exchanges long before their lease: no message is ever in two
    exchanges at once, and each is accepted exactly once."""
    n, dripped = 10, 3
    settings: dict[str, Any] = {
        "lease_s": 3, "deadline_s": 1.0, "read_timeout_s": 0.5, "concurrency": 1,
        "retry": {"max_attempts": 20, "initial_backoff_s": 1.0, "max_backoff_s": 2},
        "circuit": {"failure_threshold": 100, "probe_interval_s": 0.5},
    }
    with Gatherer() as g:
        g.script([Reply(503, body=b"y" * 10, drip=0.2)] * dripped)
        cfg = delivery_config(redis_url, g.url, **settings)
        enqueue(cfg, r, tmp_path, n)
        box = Outbox(r, "irus")
        done = threading.Event()
        errors: list[BaseException] = []

        def push_until_empty() -> None:
            client = redis.Redis.from_url(redis_url)
            pusher = Pusher(cfg, client, cfg.gatherers["irus"])
            try:
                while not done.is_set():
                    pusher.push_once()
                    stats = Outbox(client, "irus").stats()
                    if stats["pending"] == stats["in_flight"] == 0:
                        done.set()
                    time.sleep(0.05)
            except BaseException as e:  # surfaced by the assertion below
                errors.append(e)
                done.set()
            finally:
                pusher.close()
                client.close()

        threads = [threading.Thread(target=push_until_empty) for _ in range(2)]
        for t in threads:
            t.start()
        assert done.wait(40), "the outbox was not emptied"
        for t in threads:
            t.join(10)
        assert not errors
        exchanges = g.exchanges()
    assert box.stats()["sent"] == n and box.stats()["failed"] == 0
    accepted = per_event([q for q, _ in exchanges[dripped:]])
    assert len(accepted) == n and set(accepted.values()) == {1}  # exactly once each
    spans: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
    for q, ended in exchanges:
        spans[event_key(q.query)].append((q.time, ended))
    for intervals in spans.values():
        intervals.sort()
        for (_, first_end), (second_start, _) in zip(intervals, intervals[1:], strict=False):
            assert second_start >= first_end, "one message in two exchanges at once"
    assert sum(len(v) for v in spans.values()) == n + dripped
