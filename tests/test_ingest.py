"""Ingest end to end: summaries, bad input, idempotency, and resuming after SIGKILL."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

from pirus_bridge.checkpoint import Entry
from pirus_bridge.ingest import Ingester
from pirus_bridge.store import UsageStore
from tests.helpers import ROOT, clf, make_config, snapshot, wait_until, write_log

SAMPLE = ROOT / "fixtures" / "logs" / "sample-eprints.log"
BROKEN = ROOT / "fixtures" / "logs" / "broken.log"
IRUS = {"irus": {"url": "http://127.0.0.1:9/counter/", "metrics": ["request", "investigation"]}}


def test_ingest_summary_adds_up(redis_url: str, r: redis.Redis) -> None:
    s = Ingester(make_config(redis_url, gatherers=IRUS), r).ingest(str(SAMPLE))
    lines = len(SAMPLE.read_text().splitlines())
    j = s.to_json()
    assert list(j) == [
        "lines", "parsed", "unparsed", "bots", "notfound", "other",
        "investigations", "requests", "double_clicks", "enqueued",
    ]
    assert j["lines"] == lines
    assert j["parsed"] + j["unparsed"] == lines
    usage = j["investigations"] + j["requests"] + j["double_clicks"]
    assert j["bots"] + j["notfound"] + j["other"] + usage == j["parsed"]
    assert j["investigations"] > 0 and j["requests"] > 0 and j["double_clicks"] > 0
    assert j["enqueued"] == {"irus": j["investigations"] + j["requests"]}
    # the seed's processing counters
    assert int(r.get("u:bothits") or 0) == j["bots"]
    assert int(r.get("u:objectviews") or 0) == usage
    assert int(r.get("u:fof") or 0) == j["notfound"]


def test_ingest_counts_match_a_hand_count(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    lines = [
        clf("02/Oct/2026:10:00:00 +0000", "/7/"),
        clf("02/Oct/2026:10:00:05 +0000", "/7/1/a.pdf"),
        clf("02/Oct/2026:10:00:09 +0000", "/7/1/a.pdf"),  # double-click
        clf("02/Oct/2026:10:00:10 +0000", "/style/auto.css"),
        clf("02/Oct/2026:10:00:11 +0000", "/99999/", status=404),
        clf("02/Oct/2026:10:00:12 +0000", "/7/", ua="Googlebot/2.1"),
    ]
    path = write_log(tmp_path / "a.log", lines)
    s = Ingester(make_config(redis_url, gatherers=IRUS), r).ingest(str(path))
    assert s.to_json() == {
        "lines": 6, "parsed": 6, "unparsed": 0, "bots": 1, "notfound": 1, "other": 1,
        "investigations": 1, "requests": 1, "double_clicks": 1, "enqueued": {"irus": 2},
    }


def test_ingest_broken_lines_are_counted_and_sampled(redis_url: str, r: redis.Redis) -> None:
    s = Ingester(make_config(redis_url), r).ingest(str(BROKEN))
    total = BROKEN.read_bytes().count(b"\n") + (0 if BROKEN.read_bytes().endswith(b"\n") else 1)
    assert s.lines == total - 2  # its lines 14 and 15 are blank: skipped, no log lines
    assert s.unparsed > 0
    assert s.samples and all(x.line >= 1 and x.file == str(BROKEN) for x in s.samples)
    assert int(r.get("u:unparsed") or 0) == s.unparsed


@pytest.mark.parametrize("opener", [gzip.open, bz2.open])
def test_ingest_compressed_equals_plain(
    tmp_path: Path, redis_url: str, r: redis.Redis, opener: object
) -> None:
    plain = Ingester(make_config(redis_url), r).ingest(str(SAMPLE)).to_json()
    stats = UsageStore(r).item_stats("1234")
    r.flushall()
    packed = tmp_path / "sample.log.x"
    with opener(packed, "wb") as f:  # type: ignore[operator]
        f.write(SAMPLE.read_bytes())
    assert Ingester(make_config(redis_url), r).ingest(str(packed)).to_json() == plain
    assert UsageStore(r).item_stats("1234") == stats


def test_ingest_same_file_twice_changes_nothing(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    cfg = make_config(redis_url, gatherers=IRUS)
    first = Ingester(cfg, r).ingest(str(SAMPLE))
    before = snapshot(r, ("c:*", "dly:*", "u:*", "t:*", "ob:*"))
    copy = tmp_path / "renamed-copy.log"
    copy.write_bytes(SAMPLE.read_bytes())
    again = Ingester(cfg, r).ingest(str(copy))
    assert snapshot(r, ("c:*", "dly:*", "u:*", "t:*", "ob:*")) == before
    assert again.lines == 0 and first.lines > 0
    assert again.enqueued == {"irus": 0}


def test_ingest_grown_file_counts_only_new_lines(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    cfg = make_config(redis_url)
    lines = SAMPLE.read_text().splitlines(keepends=True)
    path = write_log(tmp_path / "growing.log", lines[:300])
    Ingester(cfg, r).ingest(str(path))
    write_log(path, lines)
    s = Ingester(cfg, r).ingest(str(path))
    assert s.lines == len(lines) - 300
    grown = snapshot(r)
    r.flushall()
    Ingester(cfg, r).ingest(str(SAMPLE))
    assert snapshot(r) == grown


def checkpoint_entries(r: redis.Redis, key: bytes) -> list[Entry]:
    return [Entry(**json.loads(v)) for v in r.hvals(key)]


def _write_config(tmp_path: Path, redis_url: str, batch_size: int) -> Path:
    cfg = {
        "redis": {"url": redis_url},
        "repository": {
            "host": "eprints.example.ac.uk",
            "base_url": "https://eprints.example.ac.uk",
            "mapping": str(ROOT / "mappings" / "eprints3.yaml"),
        },
        "counting": {"salt": "kill-test", "batch_size": batch_size},
        "gatherers": IRUS,
    }
    path = tmp_path / "pirus-bridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ingest_sigkill_then_rerun_equals_one_clean_run(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    from bench.loggen import generate_log

    log = tmp_path / "big.log"
    generate_log(log, 60_000, seed=7)
    config = _write_config(tmp_path, redis_url, batch_size=500)
    cmd = [sys.executable, "-m", "pirus_bridge", "--config", str(config), "ingest", str(log)]

    clean = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True)
    expected = snapshot(r, ("c:*", "dly:*", "u:*", "t:*", "d[vd]:*", "ob:*"))
    clean_summary = json.loads(clean.stdout)
    r.flushall()

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def committed() -> int:
        return max((e.line for k in r.scan_iter(match="ingest:*", _type="hash")
                    for e in checkpoint_entries(r, k)), default=0)

    assert wait_until(lambda: committed() > 5_000, timeout=60), "ingest made no progress"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert committed() < 60_000, "the run finished before it was killed"

    rerun = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(rerun.stdout)["lines"] < clean_summary["lines"]
    after = snapshot(r, ("c:*", "dly:*", "u:*", "t:*", "d[vd]:*", "ob:*"))
    # the killed run's held set expires on its own; its messages fall due all the same
    assert {k: v for k, v in after.items() if ":held:" not in k} == expected


def test_overlapping_runs_restore_the_interpreter_settings_when_the_last_one_ends() -> None:
    import gc
    import sys

    from pirus_bridge.ingest import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL_S, _tuned_interpreter

    before = (sys.getswitchinterval(), gc.get_threshold())
    first, second = _tuned_interpreter(), _tuned_interpreter()
    first.__enter__()
    assert sys.getswitchinterval() <= SWITCH_INTERVAL_S
    assert gc.get_threshold()[0] >= GC_YOUNG_THRESHOLD
    second.__enter__()  # a second followed file, say
    first.__exit__(None, None, None)  # the first run ends while the second goes on
    assert sys.getswitchinterval() <= SWITCH_INTERVAL_S
    assert gc.get_threshold()[0] >= GC_YOUNG_THRESHOLD
    second.__exit__(None, None, None)
    assert (sys.getswitchinterval(), gc.get_threshold()) == before
