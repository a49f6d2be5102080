"""``push``, ``outbox``, ``failed`` and ``reconcile`` on the command line (SPEC §11).

Most commands run in-process through click's CliRunner; ``push`` runs as the real console
entry point in a subprocess (it installs signal handlers), as do the exit-code contract checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from pirus_bridge.cli import cli
from pirus_bridge.config import Config
from pirus_bridge.outbox import DeliveryMeta, Outbox
from pirus_bridge.pusher import Pusher
from tests.delivery_support import (
    FakeClock,
    delivery_config,
    enqueue,
    per_event,
    write_config_file,
)
from tests.gatherer import Gatherer, Reply
from tests.helpers import ROOT

MONTH = "2026-10"
ROW_KEYS = ["gatherer", "id", "state", "at", "item", "metric", "event_time", "attempts",
            "last_status", "last_error"]
DAY = 86400.0


@dataclass
class Env:
    config: Path
    cfg: Config
    r: redis.Redis
    g: Gatherer
    tmp_path: Path

    @property
    def box(self) -> Outbox:
        return Outbox(self.r, "irus")

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.config), *args])

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout)

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real entry point, as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "pirus_bridge", "--config", str(self.config), *args],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )

    def enqueue(self, n: int, **kw: Any) -> None:
        enqueue(self.cfg, self.r, self.tmp_path, n, **kw)

    def fail_some(self, n: int, *, at: float | None = None) -> list[str]:
        """Enqueue ``n`` (< 5) events that fail for good (503 with a single attempt allowed);
        return their ids."""
        before = {i for i, _ in self.box.ids("failed", 10**6)}
        self.enqueue(n, first_item=800 + len(before), day="20/Oct/2026")
        if at is None:  # the real way: the gatherer fails them and their attempts run out
            self.g.script([Reply(503, body="unknown repository")] * n)
            cfg = delivery_config(self.cfg.redis.url or "", self.g.url,
                                  retry={"max_attempts": 1})
            pusher = Pusher(cfg, self.r, cfg.gatherers["irus"], clock=FakeClock())
            try:
                assert pusher.push_once().failed == n
            finally:
                pusher.close()
        else:  # given up on long ago
            pipe = self.r.pipeline()
            for m in self.box.claim(n, 60, now=time.time() + 1):
                self.box.settle(pipe, "fail", m, now=at,
                                meta=DeliveryMeta(attempts=12, last_status=404))
            pipe.execute()
        return [i for i, _ in self.box.ids("failed", 10**6) if i not in before]


@pytest.fixture
def env(redis_url: str, r: redis.Redis, tmp_path: Path) -> Iterator[Env]:
    with Gatherer() as g:
        config = write_config_file(tmp_path / "pirus-bridge.yaml", redis_url, g.url,
                                   retry={"initial_backoff_s": 60})
        yield Env(config, delivery_config(redis_url, g.url), r, g, tmp_path)


def one_line_error(result: Result | subprocess.CompletedProcess[str]) -> str:
    err = result.stderr.strip()
    assert err and "\n" not in err, err
    return err


def test_cli_push_once_json(env: Env) -> None:
    env.enqueue(12)
    done = env.script("push", "--once", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"irus": {"sent": 12, "retried": 0, "failed": 0,
                                                "released": 0, "circuit": "closed",
                                                "paused_reason": None, "errors": {}}}
    assert env.g.received == 12 and len(per_event(env.g.requests)) == 12
    again = env.script("push", "--once", "--gatherer", "irus", "--json")
    assert json.loads(again.stdout)["irus"]["sent"] == 0


def test_cli_push_once_text_and_unknown_gatherer(env: Env) -> None:
    env.enqueue(2)
    done = env.script("push", "--once")
    assert done.returncode == 0 and done.stdout.startswith("irus: sent 2,")
    bad = env.script("push", "--once", "--gatherer", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_cli_outbox_stats_json_shape(env: Env) -> None:
    env.enqueue(5)
    stats = env.json("outbox", "stats")
    assert list(stats) == ["irus"]
    assert list(stats["irus"])[:5] == ["pending", "in_flight", "sent", "failed",
                                       "oldest_pending_age_s"]  # SPEC §11, then the rest
    assert stats["irus"]["pending"] == 5 and stats["irus"]["oldest_pending_age_s"] >= 0
    text = env.run("outbox", "stats")
    assert text.exit_code == 0 and "irus" in text.stdout and "pending" in text.stdout


def test_cli_outbox_list_json(env: Env) -> None:
    env.enqueue(6)
    rows = env.json("outbox", "list")
    assert len(rows) == 6
    assert all(list(row) == ROW_KEYS for row in rows)
    assert {row["state"] for row in rows} == {"pending"}
    assert {row["metric"] for row in rows} == {"Request"}
    assert all(row["attempts"] == 0 and row["last_status"] is None for row in rows)
    assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)
    assert len(env.json("outbox", "list", "--limit", "2")) == 2
    assert env.script("push", "--once").returncode == 0
    assert env.json("outbox", "list") == []
    sent = env.json("outbox", "list", "--state", "sent", "--gatherer", "irus")
    assert len(sent) == 6 and all(list(row) == ROW_KEYS for row in sent)
    # The audit record: item, metric and event time stay; the raw event is gone.
    assert {row["item"] for row in sent} == {str(i) for i in range(100, 106)}
    assert {row["metric"] for row in sent} == {"Request"} and all(row["event_time"] for row in sent)
    shown = env.json("outbox", "show", sent[0]["id"])
    assert shown["state"] == "sent" and shown["item"] == sent[0]["item"]
    assert shown["oai_identifier"] == f"oai:eprints.example.ac.uk:{sent[0]['item']}"
    assert "event" not in shown and "198.18." not in json.dumps(shown)


def test_cli_outbox_show_json_includes_the_request(env: Env) -> None:
    env.enqueue(1)
    [(msg_id, _)] = env.box.ids("pending")
    shown = env.json("outbox", "show", msg_id)
    assert shown["id"] == msg_id and shown["state"] == "pending"
    assert shown["event"]["item"] == shown["item"] == "100"
    request = shown["request"]
    assert request["method"] == "GET"
    assert request["url"].startswith(env.g.url + "?url_ver=Z39.88-2004&")
    assert "rft.artnum=oai%3Aeprints.example.ac.uk%3A100" in request["url"]
    text = env.run("outbox", "show", msg_id)
    assert text.exit_code == 0 and request["url"] in text.stdout


def test_cli_unknown_message_id_is_a_one_line_error(env: Env) -> None:
    for command in (("outbox", "show"), ("failed", "show"), ("failed", "retry"),
                    ("failed", "purge")):
        result = env.run(*command, "0123456789abcdef01234567")
        assert result.exit_code == 1, command
        assert "0123456789abcdef01234567" in one_line_error(result)
    done = env.script("outbox", "show", "nope", "--json")
    assert done.returncode == 1 and done.stdout == ""
    assert "no message nope" in one_line_error(done)


def test_cli_failed_retry_needs_ids_or_all(env: Env) -> None:
    for command in (("failed", "retry"), ("failed", "purge")):
        result = env.run(*command)
        assert result.exit_code == 2, command
    assert env.script("failed", "retry").returncode == 2


def test_cli_failed_list_and_show(env: Env) -> None:
    ids = env.fail_some(3)
    rows = env.json("failed", "list")
    assert {row["id"] for row in rows} == set(ids)
    assert all(row["state"] == "failed" and row["last_status"] == 503 and row["attempts"] == 1
               for row in rows)
    assert all(row["last_error"] == "HTTP 503 Service Unavailable" for row in rows)
    shown = env.json("failed", "show", ids[0])
    assert shown["meta"]["body_excerpt"] == "unknown repository"
    assert shown["request"]["url"].startswith(env.g.url)
    text = env.run("failed", "list")
    assert text.exit_code == 0 and text.stdout.count("HTTP 503 Service Unavailable") == 3
    assert "body         unknown repository" in env.run("failed", "show", ids[0]).stdout


def test_cli_failed_retry_resends(env: Env) -> None:
    ids = env.fail_some(3)
    env.g.clear()
    result = env.run("failed", "retry", ids[0])
    assert result.exit_code == 0 and result.stdout.strip() == "1 message(s) back in the outbox"
    assert env.box.stats()["failed"] == 2
    assert env.json("outbox", "list")[0]["id"] == ids[0]
    assert json.loads(env.script("push", "--once", "--json").stdout)["irus"]["sent"] == 1
    assert env.run("failed", "retry", "--all").stdout.strip() == "2 message(s) back in the outbox"
    assert json.loads(env.script("push", "--once", "--json").stdout)["irus"]["sent"] == 2
    assert env.g.received == 3 and len(per_event(env.g.requests)) == 3
    assert env.json("failed", "list") == []
    assert env.run("failed", "retry", ids[0]).exit_code == 1  # no longer in the failure queue


def test_cli_failed_purge_all_and_older_than(env: Env) -> None:
    old = env.fail_some(2, at=time.time() - 10 * DAY)
    recent = env.fail_some(2)
    result = env.run("failed", "purge", "--older-than", "5")
    assert result.exit_code == 0 and result.stdout.strip() == "2 message(s) purged"
    assert {row["id"] for row in env.json("failed", "list")} == set(recent)
    assert all(env.box.state_of(i) is None for i in old)
    assert env.run("failed", "purge", recent[0]).stdout.strip() == "1 message(s) purged"
    assert env.run("failed", "purge", "--all").stdout.strip() == "1 message(s) purged"
    assert env.json("failed", "list") == []
    # Purged messages stay counted as failed.
    assert env.json("reconcile", "--month", MONTH)["irus"]["failed"] == 4


def test_cli_reconcile_matches_the_gatherer(env: Env) -> None:
    env.fail_some(2)
    env.enqueue(10)
    env.g.clear()
    env.g.script([503, 503])  # two go back to pending for a retry
    pushed = json.loads(env.script("push", "--once", "--json").stdout)["irus"]
    assert (pushed["sent"], pushed["retried"]) == (8, 2)
    env.enqueue(3, day="25/Oct/2026", first_item=600)  # not pushed yet
    month = env.json("reconcile", "--month", MONTH)
    received = env.g.received - 2  # the two 503s were not deliveries
    assert month == {"irus": {"qualified": 15, "sent": received, "failed": 2, "pending": 5}}
    c = month["irus"]
    assert c["qualified"] == c["sent"] + c["failed"] + c["pending"]
    assert env.json("reconcile", "--month", "2026-09") == {
        "irus": {"qualified": 0, "sent": 0, "failed": 0, "pending": 0}}
    assert env.run("reconcile", "--month", "2026-13").exit_code == 2
    text = env.run("reconcile", "--month", MONTH)
    assert text.exit_code == 0 and "irus" in text.stdout


def test_cli_outbox_show_of_a_failed_message_keeps_its_history(env: Env) -> None:
    env.enqueue(1)
    box = env.box
    message = box.claim(1, 60, now=time.time() + 1)[0]
    pipe = env.r.pipeline()
    box.settle(pipe, "retry", message, now=time.time(), due=time.time() + 600,
               meta=DeliveryMeta(attempts=2, last_status=502, last_error="HTTP 502 Bad Gateway"))
    pipe.execute()
    shown = env.json("outbox", "show", message.id)
    assert (shown["state"], shown["attempts"], shown["last_status"]) == ("pending", 2, 502)
    assert shown["meta"]["last_error"] == "HTTP 502 Bad Gateway"


def test_cli_show_never_prints_gatherer_credentials(redis_url: str, r: redis.Redis,
                                                    tmp_path: Path) -> None:
    with Gatherer() as g:
        url = f"http://campus:s3cret-pw@127.0.0.1:{g.port}/counter/?api_key=k3y-value&x=1"
        config = write_config_file(tmp_path / "pirus-bridge.yaml", redis_url, url,
                                   retry={"max_attempts": 1})
        cfg = delivery_config(redis_url, url, retry={"max_attempts": 1})
        enqueue(cfg, r, tmp_path, 2)
        g.script([Reply(503, body="api_key=k3y-value rejected for campus/s3cret-pw")])
        pusher = Pusher(cfg, r, cfg.gatherers["irus"], clock=FakeClock())
        try:
            assert pusher.push_once().sent == 1
        finally:
            pusher.close()
        assert g.requests[0].headers["Authorization"] == "Basic Y2FtcHVzOnMzY3JldC1wdw=="
        [(failed_id, _)] = Outbox(r, "irus").ids("failed")
        runner = CliRunner()
        outputs = [runner.invoke(cli, ["--config", str(config), *args]).output for args in (
            ["failed", "show", failed_id], ["failed", "show", failed_id, "--json"],
            ["failed", "list"], ["outbox", "list", "--state", "sent"], ["outbox", "stats"])]
    text = "\n".join(outputs)
    assert "s3cret" not in text and "k3y-value" not in text, text
    assert "api_key=***" in text and "campus:***@" in text
