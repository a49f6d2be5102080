"""Personal data leaves: failed messages lose their raw identity after the configured days, and
delivered bodies leave the append-only file once ``serve`` has it rewritten."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from pirus_bridge.ingest import Ingester
from pirus_bridge.outbox import DeliveryMeta, Outbox
from pirus_bridge.pusher import Pusher
from pirus_bridge.retention import AofRewriter, without_identity
from pirus_bridge.scheduler import Service
from tests.gatherer import Gatherer, gatherer_fixture  # noqa: F401 - the fixture
from tests.helpers import clf, make_config, wait_until, write_log
from tests.redis_server import RedisServer

DAY = 86400
MARK_IP = "203.0.113.77"
MARK_UA = "Mozilla/5.0 (X11; Linux x86_64) RetentionCheck/1.0"


def _ingest(tmp_path: Path, url: str, gatherer_url: str, r: redis.Redis, n: int = 4) -> None:
    lines = [clf(f"14/Oct/2026:10:{i:02d}:00 +0000", f"/{1234 + i}/1/paper.pdf", ip=MARK_IP,
                 ua=MARK_UA) for i in range(n)]
    cfg = make_config(url, gatherers={"irus": {"url": gatherer_url}})
    Ingester(cfg, r).ingest(str(write_log(tmp_path / "access.log", lines)))


@pytest.mark.parametrize(("body", "expected"), [
    ('{"t":1,"i":"1","o":null,"m":"R","u":"x","ip":"192.0.2.1","ua":"UA","r":""}',
     {"t": 1, "i": "1", "o": None, "m": "R", "u": "x", "ip": "", "ua": "", "r": ""}),
    ('{"event":{"ts":1,"ip":"192.0.2.1","ua":"UA"},"month":"2026-10"}',
     {"event": {"ts": 1, "ip": "", "ua": ""}, "month": "2026-10"}),
])
def test_without_identity_blanks_address_and_agent(body: str, expected: dict) -> None:
    new = without_identity(body)
    assert new is not None and json.loads(new) == expected
    assert without_identity(new) is None  # nothing left to blank


def test_maintenance_forgets_the_identity_of_old_failed_messages(
    tmp_path: Path, redis_url: str, r: redis.Redis, gatherer: Gatherer
) -> None:
    _ingest(tmp_path, redis_url, gatherer.url, r)
    now = time.time()
    box = Outbox(r, "irus")
    old, recent = box.claim(2, 300, now + 5), box.claim(2, 300, now + 5)
    pipe = r.pipeline(transaction=False)
    for message, when in [(m, now - 31 * DAY) for m in old] + [(m, now - DAY) for m in recent]:
        box.settle(pipe, "fail", message, now=when,
                   meta=DeliveryMeta(attempts=1, last_status=404, last_error="HTTP 404"))
    pipe.execute()
    cfg = make_config(redis_url, gatherers={"irus": {"url": gatherer.url}})
    Service(cfg, r, clock=lambda: now).maintain()
    for message in old:
        kept = box.get(message.id)
        assert kept is not None and kept.event is not None
        assert kept.event.ip == "" and kept.event.user_agent == ""
        assert kept.event.item == message.event.item  # type: ignore[union-attr]
        assert kept.meta.last_error == "HTTP 404"  # still auditable
    for message in recent:
        kept = box.get(message.id)
        assert kept is not None and kept.event is not None and kept.event.ip == MARK_IP
    pending = box.ids("pending", 100)
    raw = b"".join(v for v in r.hgetall("ob:{irus}:msg").values())
    # the recent failures and the pending messages keep theirs (these until delivered)
    assert raw.count(MARK_IP.encode()) == len(recent) + len(pending)


def test_delivered_bodies_leave_the_append_only_file(tmp_path: Path, gatherer: Gatherer,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    r = server.client()
    try:
        _ingest(tmp_path, server.url, gatherer.url, r)

        def on_disk() -> tuple[int, int]:
            files = [p for p in (tmp_path / "redis").rglob("*") if p.is_file()
                     and p.name != "redis.log"]
            data = b"".join(p.read_bytes() for p in files)
            return data.count(MARK_IP.encode()) + data.count(MARK_UA.encode()), len(data)

        before, size_before = on_disk()
        assert before > 0  # the raw identity was written to the AOF with the messages
        cfg = make_config(server.url, gatherers={"irus": {"url": gatherer.url}})
        pusher = Pusher(cfg, r, cfg.gatherers["irus"])
        try:
            assert pusher.push_once().sent == 4
        finally:
            pusher.close()
        assert not r.hlen("ob:{irus}:msg")  # gone from memory at once …
        still, _ = on_disk()
        assert still >= before  # … but not from the disk
        forks = int(r.info("stats")["total_forks"])  # a rewrite forks
        service = Service(cfg, r)
        service.maintain()

        def rewritten() -> bool:
            p = r.info("persistence")
            return (int(r.info("stats")["total_forks"]) > forks
                    and not int(p["aof_rewrite_in_progress"])
                    and not int(p["aof_rewrite_scheduled"])
                    and p["aof_last_bgrewrite_status"] == "ok")

        assert wait_until(rewritten, timeout=30)
        assert wait_until(lambda: on_disk()[0] == 0, timeout=30), on_disk()
        after, size_after = on_disk()
        with capsys.disabled():
            print(f"\nAOF: identity strings {before} → {after}, bytes {size_before} → "
                  f"{size_after}")
        # no new delivery since: the next maintenance asks for no other rewrite
        service.maintain()
        assert int(r.info("stats")["total_forks"]) == forks + 1
    finally:
        r.close()
        server.stop()


def test_aof_rewriter_waits_for_deliveries_and_the_interval(redis_url: str,
                                                           r: redis.Redis) -> None:
    now = [1000.0]
    rw = AofRewriter(3600, clock=lambda: now[0])
    assert not rw.maybe_rewrite(r, 0)  # nothing delivered yet
    # the session's test server has no append-only file: nothing to rewrite
    assert r.info("persistence")["aof_enabled"] == 0
    assert not rw.maybe_rewrite(r, 10)
    assert not AofRewriter(0).maybe_rewrite(r, 10)  # turned off
