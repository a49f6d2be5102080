"""Replays are not clicks (SPEC §4): the very same lines read again change nothing.

Every metric — the COUNTER counts, the daily-unique series, the outbox — must be a function of
the set of distinct lines, whether the lines come again through standard input, in a file that
grew, in a renamed or compressed copy, in two runs of one file at once, or in a file that shares
its first lines with another.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import redis
import yaml

from pirus_bridge.accounting import month_accounting
from pirus_bridge.ingest import Ingester
from tests.helpers import ROOT, make_config, snapshot

SAMPLE = ROOT / "fixtures" / "logs" / "sample-eprints.log"
IRUS = {"irus": {"url": "http://127.0.0.1:9/counter/", "metrics": ["request", "investigation"]}}
METRICS = ("c:*", "dly:*", "t:*", "d[vd]:*", "objectitems", "ob:*")


def config_file(tmp_path: Path, redis_url: str, **counting: object) -> Path:
    cfg = {
        "redis": {"url": redis_url},
        "repository": {"host": "eprints.example.ac.uk", "base_url": "https://eprints.example.ac.uk",
                       "mapping": str(ROOT / "mappings" / "eprints3.yaml")},
        "counting": {"salt": "replays", **counting},
        "gatherers": IRUS,
    }
    path = tmp_path / "pirus-bridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_ingest(config: Path, *paths: str, stdin: bytes | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pirus_bridge", "--config", str(config), "ingest", "--json", *paths],
        input=stdin, capture_output=True, check=True,
    )
    return json.loads(done.stdout)


def metrics(r: redis.Redis) -> dict:
    # a run's set of held messages is its own; it is gone once the run ends
    return {k: v for k, v in snapshot(r, METRICS).items() if ":held:" not in k}


def test_standard_input_piped_twice_counts_once(tmp_path: Path, redis_url: str,
                                                r: redis.Redis) -> None:
    config = config_file(tmp_path, redis_url)
    first = run_ingest(config, "-", stdin=SAMPLE.read_bytes())
    before = metrics(r)
    again = run_ingest(config, "-", stdin=SAMPLE.read_bytes())
    assert metrics(r) == before
    assert (again["investigations"], again["requests"], again["double_clicks"]) == (0, 0, 0)
    assert again["enqueued"] == {"irus": 0}
    assert first["investigations"] > 0 and first["enqueued"]["irus"] > 0


def test_a_small_file_that_grew_is_resumed(tmp_path: Path, redis_url: str,
                                           r: redis.Redis) -> None:
    lines = SAMPLE.read_text().splitlines(keepends=True)
    assert len("".join(lines[:10])) < 8192
    log = tmp_path / "access.log"
    log.write_text("".join(lines[:10]))
    config = config_file(tmp_path, redis_url)
    run_ingest(config, str(log))
    log.write_text("".join(lines))
    grown = run_ingest(config, str(log))
    assert grown["lines"] == len(lines) - 10
    state, acct = metrics(r), month_accounting(r, "2026-10")
    r.flushall()
    run_ingest(config, str(SAMPLE))
    assert metrics(r) == state
    assert month_accounting(r, "2026-10") == acct


def test_renamed_and_compressed_copies_change_nothing(tmp_path: Path, redis_url: str,
                                                      r: redis.Redis) -> None:
    config = config_file(tmp_path, redis_url)
    run_ingest(config, str(SAMPLE))
    before, acct = metrics(r), month_accounting(r, "2026-10")
    renamed = tmp_path / "access.log.1"
    renamed.write_bytes(SAMPLE.read_bytes())
    packed = tmp_path / "access.log.2.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    again = run_ingest(config, str(renamed), str(packed))
    assert again["lines"] == 0
    assert metrics(r) == before
    assert month_accounting(r, "2026-10") == acct


def test_two_runs_of_one_file_at_once_count_it_once(tmp_path: Path, redis_url: str,
                                                    r: redis.Redis) -> None:
    from bench.loggen import generate_log

    log = tmp_path / "big.log"
    generate_log(str(log), 40_000, seed=5)
    config = config_file(tmp_path, redis_url, batch_size=500)
    run_ingest(config, str(log))
    clean, acct = metrics(r), month_accounting(r, "2024-03")
    r.flushall()
    cmd = [sys.executable, "-m", "pirus_bridge", "--config", str(config), "ingest", "--json",
           str(log)]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in runs]
    assert all(p.returncode == 0 for p in runs), [e for _, e in outputs]
    summaries = [json.loads(o) for o, _ in outputs]
    assert sum(s["lines"] for s in summaries) == 40_000  # one waited, then found it all done
    assert metrics(r) == clean
    assert month_accounting(r, "2024-03") == acct


def test_two_files_that_share_their_first_lines_are_two_streams(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """Not a resume of each other: every line of the second file is read, and the shared ones
    change no count."""
    lines = SAMPLE.read_text().splitlines(keepends=True)
    shared, a_only, b_only = lines[:200], lines[200:300], lines[300:]
    assert len("".join(shared)) > 8192
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(shared + a_only))
    b.write_text("".join(shared + b_only))
    config = config_file(tmp_path, redis_url)
    run_ingest(config, str(a))
    second = run_ingest(config, str(b))
    assert second["lines"] == len(shared) + len(b_only)
    both = metrics(r)
    r.flushall()
    run_ingest(config, str(SAMPLE))
    assert metrics(r) == both


def test_resume_after_a_crash_is_exact_with_a_tiny_batch(tmp_path: Path, redis_url: str,
                                                         r: redis.Redis) -> None:
    """Checkpoints are written every batch; a file read again after it was extended with
    a copy of its own first half (a botched rotation) counts only what is new."""
    cfg = make_config(redis_url, counting={"salt": "replays", "batch_size": 7})
    lines = SAMPLE.read_text().splitlines(keepends=True)
    log = tmp_path / "x.log"
    log.write_text("".join(lines))
    Ingester(cfg, r).ingest(str(log))
    state = metrics(r)
    log.write_text("".join(lines + lines[:100]))
    s = Ingester(cfg, r).ingest(str(log))
    assert s.lines == 100 and s.investigations == s.requests == 0
    assert metrics(r) == state
