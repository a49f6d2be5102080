"""``serve``: scheduled pushes under APScheduler, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pirus_bridge.config import GathererConfig
from pirus_bridge.ingest import Ingester
from pirus_bridge.scheduler import trigger_for
from tests.gatherer import Gatherer
from tests.helpers import ROOT, make_config, wait_until

SAMPLE = ROOT / "fixtures" / "logs" / "sample-eprints.log"


@pytest.fixture
def gatherer() -> Iterator[Gatherer]:
    g = Gatherer()
    g.start()
    yield g
    g.stop()


def test_trigger_for_interval_and_cron() -> None:
    assert isinstance(trigger_for(GathererConfig(name="a", url="http://x/", interval_s=90)),
                      IntervalTrigger)
    cron = trigger_for(GathererConfig(name="a", url="http://x/", cron="*/5 * * * *"))
    assert isinstance(cron, CronTrigger)


def test_serve_pushes_on_schedule_and_stops_cleanly(
    tmp_path: Path, redis_url: str, r: redis.Redis, gatherer: Gatherer
) -> None:
    gatherers = {"irus": {"url": gatherer.url, "interval_s": 1,
                          "metrics": ["request", "investigation"]}}
    cfg = {
        "redis": {"url": redis_url},
        "repository": {"host": "eprints.example.ac.uk", "base_url": "https://eprints.example.ac.uk",
                       "mapping": str(ROOT / "mappings" / "eprints3.yaml")},
        "counting": {"salt": "serve-test"},
        "gatherers": gatherers,
    }
    config = tmp_path / "pirus-bridge.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pirus_bridge", "--config", str(config), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        summary = Ingester(make_config(redis_url, gatherers=gatherers,
                                       counting={"salt": "serve-test"}), r).ingest(str(SAMPLE))
        expected = summary.enqueued["irus"]
        assert expected > 0
        assert wait_until(lambda: len(gatherer.requests) >= expected, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "stopped cleanly" in err
    assert len(gatherer.requests) == expected
    assert r.zcard("ob:{irus}:pending") == 0 and r.zcard("ob:{irus}:inflight") == 0
