"""A gatherer that is set up wrong, or failing most calls, is paused as a whole (SPEC §6).

Every message answered the same non-retryable way (401, 403, 404, a redirect loop, a redirect
to another scheme) says the setting is wrong, not the messages: the gatherer is paused with
that reason (``outbox stats``, ``push``), the backlog stays pending with no attempt used, and
the failure queue stays empty. A gatherer failing most (not all) calls opens its circuit too.
Real gatherer on 127.0.0.1; time is a fake clock.
"""

from __future__ import annotations

import json
import re
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
    write_config_file,
)
from tests.gatherer import Gatherer, Reply

N = 40  # the backlog: more than a batch, so a bad setting could have reached all of it


@pytest.fixture
def gatherer() -> Iterator[Gatherer]:
    with Gatherer() as g:
        yield g


class Rig:
    def __init__(self, redis_url: str, r: redis.Redis, g: Gatherer, tmp_path: Path,
                 **overrides: Any) -> None:
        overrides = {"batch_size": 20, **overrides}
        self.cfg = delivery_config(redis_url, g.url, **overrides)
        self.config_file = write_config_file(tmp_path / "pirus-bridge.yaml", redis_url, g.url,
                                             **overrides)
        self.clock = FakeClock()
        self.r, self.g, self.tmp_path = r, g, tmp_path
        self.box = Outbox(r, "irus")
        self.pusher = Pusher(self.cfg, r, self.cfg.gatherers["irus"], clock=self.clock)

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(cli, ["--config", str(self.config_file), *args])
        assert result.exit_code == 0, result.output
        return result.stdout


@pytest.fixture
def rig(redis_url: str, r: redis.Redis, gatherer: Gatherer, tmp_path: Path) -> Iterator[Rig]:
    made = Rig(redis_url, r, gatherer, tmp_path)
    yield made
    made.pusher.close()


def assert_backlog_kept(rig: Rig) -> None:
    stats = rig.box.stats(rig.clock())
    assert (stats["pending"], stats["in_flight"], stats["failed"]) == (N, 0, 0)
    messages = rig.box.messages(i for i, _ in rig.box.ids("pending", 10**6))
    assert all(m.meta.attempts == 0 for m in messages.values())


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(401, body="token required"), "HTTP 401 Unauthorized"),
        (Reply(403, body="forbidden"), "HTTP 403 Forbidden"),
        (Reply(404, body="no such tracker"), "HTTP 404 Not Found"),
        (Reply(302, headers={"Location": "{url}"}), "redirect loop"),
        (Reply(301, headers={"Location": "ftp://127.0.0.1/counter/"}),
         "redirect to a non-HTTP location"),
        (Reply(301, headers={"Location": "/counter/moved"}), "drops the message's query"),
    ],
)
def test_every_message_refused_the_same_way_pauses_the_gatherer(
    rig: Rig, gatherer: Gatherer, reply: Reply, reason: str
) -> None:
    location = reply.headers.get("Location", "")
    if location == "{url}":  # a loop back to the very request
        gatherer.answer = lambda q: Reply(302, headers={
            "Location": f"{gatherer.url}?{q.path and _query(q)}"})
    else:
        gatherer.set_default(reply.status, headers=reply.headers, body=reply.body)
    enqueue(rig.cfg, rig.r, rig.tmp_path, N)
    first = rig.pusher.push_once()
    assert (first.sent, first.failed, first.circuit) == (0, 0, "open")
    assert first.paused_reason is not None and first.paused_reason.startswith("misconfigured: ")
    assert reason in first.paused_reason
    assert_backlog_kept(rig)
    stats = rig.box.stats(rig.clock())
    assert stats["paused_reason"] == first.paused_reason and stats["paused_for_s"] == 60.0
    table = rig.cli("outbox", "stats")  # on the real clock, a second behind the fake one
    assert "paused" in table and reason in table
    assert re.search(r"\(next try in 6[01]s\)", table)

    for _ in range(30):  # half an hour of probes, one message each
        rig.clock.advance(60)
        result = rig.pusher.push_once()
        assert (result.sent, result.failed, result.circuit) == (0, 0, "open")
    assert_backlog_kept(rig)

    gatherer.answer = None  # the admin fixes the setting
    gatherer.set_default(200)
    gatherer.clear()
    rig.clock.advance(60)
    fixed = rig.pusher.push_once()
    assert (fixed.sent, fixed.failed, fixed.circuit, fixed.paused_reason) == (
        N, 0, "closed", None)
    assert delivered_once(gatherer, N)


def _query(q: Any) -> str:
    from urllib.parse import urlencode

    return urlencode(q.query)


def test_push_shows_why_the_gatherer_is_paused(rig: Rig, gatherer: Gatherer,
                                               redis_url: str) -> None:
    gatherer.set_default(403, body="forbidden")
    enqueue(rig.cfg, rig.r, rig.tmp_path, N)
    text = rig.cli("push", "--once")
    assert text.startswith("irus: sent 0, retry later 0, failed 0, held back ")
    assert re.search(r"\n  paused: misconfigured: every message refused the same way, \d+ calls"
                     r" in a row: HTTP 403 Forbidden\n", text)
    as_json = json.loads(rig.cli("push", "--once", "--json"))
    assert as_json["irus"]["paused_reason"].startswith("misconfigured: ")
    assert rig.box.stats()["failed"] == 0


def test_one_bad_message_among_good_ones_goes_to_the_failure_queue(
    rig: Rig, gatherer: Gatherer
) -> None:
    """Refusals mixed with deliveries are the messages' own: failed, with no pause."""
    enqueue(rig.cfg, rig.r, rig.tmp_path, N)
    refused: set[str] = set()

    def answer(q: Any) -> Reply:
        if q.query["req_id"].endswith(".7"):  # one client's events are wrong in themselves
            refused.add(q.query["req_id"])
            return Reply(400, body="bad value")
        return Reply(200)

    gatherer.answer = answer
    totals = {"sent": 0, "failed": 0}
    for _ in range(3):
        result = rig.pusher.push_once()
        totals["sent"] += result.sent
        totals["failed"] += result.failed
        assert result.circuit == "closed"
        rig.clock.advance(61)
    assert totals == {"sent": N - 1, "failed": 1}
    assert rig.box.stats(rig.clock())["pending"] == 0


@pytest.mark.parametrize("share", [0.9, 0.75])
def test_a_gatherer_failing_most_calls_opens_its_circuit(
    rig: Rig, gatherer: Gatherer, share: float
) -> None:
    """Most calls fail, a few get through, so failures are never many in a row: the share of
    failed calls opens the circuit, and the backlog is not worn down attempt by attempt."""
    calls = {"n": 0}

    def answer(q: Any) -> Reply:
        calls["n"] += 1
        period = round(1 / (1 - share))
        return Reply(200) if calls["n"] % period == 0 else Reply(503, body="overloaded")

    gatherer.answer = answer
    enqueue(rig.cfg, rig.r, rig.tmp_path, N)
    opened = False
    for _ in range(20):
        result = rig.pusher.push_once()
        opened = opened or result.circuit == "open"
        assert result.failed == 0
        rig.clock.advance(61)
    assert opened
    circuit = rig.box.circuit()
    assert circuit.why in ("failing", "down")
    stats = rig.box.stats(rig.clock())
    assert stats["failed"] == 0
    messages = rig.box.messages(i for i, _ in rig.box.ids("pending", 10**6))
    assert max((m.meta.attempts for m in messages.values()), default=0) < 5  # none given up
    delivered = rig.box.stats(rig.clock())["sent"]
    assert delivered + len(messages) == N  # the rest still pending, not lost


def test_failing_ratio_is_reported(rig: Rig, gatherer: Gatherer) -> None:
    """Pure-looking, on a real run: the reason names the share of failed calls."""
    calls = {"n": 0}

    def answer(q: Any) -> Reply:
        calls["n"] += 1
        return Reply(200) if calls["n"] % 4 == 0 else Reply(502)

    gatherer.answer = answer
    enqueue(rig.cfg, rig.r, rig.tmp_path, N)
    for _ in range(10):
        if rig.pusher.push_once().circuit == "open":
            break
        rig.clock.advance(61)
    circuit = rig.box.circuit()
    assert circuit.state == "open" and circuit.why == "failing"
    assert circuit.reason.startswith("15 of the last 20 calls failed (last: HTTP 502 Bad Gateway)")
