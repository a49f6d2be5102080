"""The contract: what pirus-bridge promises whatever Redis it runs on (huey's trick: one suite,
every backend — ``single`` and ``cluster``, see ``tests/backends.py``).

Every test speaks to pirus-bridge through its command line and a config file only, and checks
the numbers against the pure statement of the rules (``counter.reference_counts``) computed from
the log's lines: so both backends are held to the same answer. Where the code cannot run on a
cluster yet, the test says what is missing (``cluster_gap``) and its cluster run is an expected
failure for exactly that reason (:class:`tests.backends.ClusterGap`).
"""

from __future__ import annotations

import calendar
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bench.loggen import generate_log
from pirus_bridge import keys
from pirus_bridge.chain import build
from pirus_bridge.config import load_config
from pirus_bridge.counter import Click, Counts, reference_counts, utc_month
from pirus_bridge.events import MetricType
from tests.backends import Backend
from tests.delivery_support import per_event, usage_lines
from tests.gatherer import Gatherer, gatherer_fixture  # noqa: F401 - the fixture
from tests.helpers import wait_until

START = calendar.timegm((2024, 3, 31, 23, 20, 0))  # the log crosses midnight and a month end
MONTHS = ("2024-03", "2024-04")
SINK = {"irus": {"url": "http://127.0.0.1:9/counter/", "metrics": ["request", "investigation"]}}
METRICS = {"TII": "Total_Item_Investigations", "UII": "Unique_Item_Investigations",
           "TIR": "Total_Item_Requests", "UIR": "Unique_Item_Requests"}

# What the cluster lacks today, by the step that refuses it.
COUNTING_GAP = (
    "UsageStore queues its scripts with pipeline.eval(), which redis-py's ClusterPipeline lacks; "
    "then a bulk batch is one MULTI/EXEC over many slots (items' keys, objectitems, u:*, acct:*, "
    "src:*, ingest:<id>) and count.lua one call over many items' keys and ob:{g}:* (CROSSSLOT)"
)


def write_log(path: Path, n: int, seed: int) -> list[str]:
    """A generated log of ``n`` lines: 300 items over 80 minutes across midnight and a month
    end, dense enough for double-clicks (about a line a second)."""
    generate_log(str(path), n, seed=seed, start=START, days=80 / 1440, items=300)
    return path.read_text().splitlines(keepends=True)


def model(backend: Backend, config: Path, lines: list[str]) -> tuple[Counts, dict[str, str]]:
    """What the rules make of ``lines`` (the pure chain and reference model, no Redis
    counting), and the OAI identifier of each item."""
    cfg = load_config(config)
    chain = build(cfg, backend.client(), send=False).chain  # reads the salt and botlist only
    events = chain.sort(lines, MONTHS[0]).events
    identities = chain.hasher.identities
    clicks = []
    oai: dict[str, str] = {}
    for e in events:
        ids = identities(e)
        clicks.append(Click(e.line, e.ts, e.item, e.metric, e.url, ids.user, ids.client,
                            ids.kind))
        if e.oai_identifier:
            oai.setdefault(e.item, e.oai_identifier)
    return reference_counts(clicks, cfg.counting.double_click_s), oai


def expected_report(counts: Counts, oai: dict[str, str], month: str) -> dict[str, dict]:
    rows = {}
    for item, months in counts.months.items():
        cell = months.get(month)
        if cell and any(cell[c] for c in METRICS):
            rows[item] = {"item": item, "oai_identifier": oai.get(item),
                          **{name: cell[c] for c, name in METRICS.items()}}
    return rows


def expected_stats(counts: Counts, oai: dict[str, str], item: str) -> dict[str, Any]:
    months = {m: {name: cell[c] for c, name in METRICS.items()}
              for m, cell in sorted(counts.months.get(item, {}).items())
              if any(cell[c] for c in METRICS)}
    totals = {name: sum(m[name] for m in months.values()) for name in METRICS.values()}
    daily = {day: {"views": d["v"], "downloads": d["d"]}
             for day, d in sorted(counts.daily.get(item, {}).items())}
    return {"item": item, "oai_identifier": oai.get(item), "totals": totals, "months": months,
            "daily": daily}


def assert_counts_match(backend: Backend, config: Path, counts: Counts,
                        oai: dict[str, str]) -> None:
    """``report --format json`` for both months, ``stats item`` of the busiest and quietest
    items, and the outbox's pending messages: all as the model says."""
    for month in MONTHS:
        got = json.loads(backend.cli(config, "report", "--month", month, "--format", "json"))
        expected = expected_report(counts, oai, month)
        assert {row["item"]: row for row in got} == expected
        assert len(got) == len(expected)
    busy = sorted(counts.months, key=lambda i: -sum(c["TII"] for c in counts.months[i].values()))
    for item in busy[:4] + busy[-2:]:
        assert backend.cli_json(config, "stats", "item", item) == expected_stats(
            counts, oai, item)
    assert backend.cli_json(config, "outbox", "stats")["irus"]["pending"] == len(counts.actions)


def stopped(pid: int) -> bool:
    """Whether every thread of process ``pid`` has stopped (SIGSTOP is delivered
    asynchronously)."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    return all((t / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for t in tasks)


def actions_by_metric(counts: Counts) -> tuple[int, int]:
    requests = sum(1 for a in counts.actions if a.metric is MetricType.REQUEST)
    return len(counts.actions) - requests, requests


# -- the contract ------------------------------------------------------------------------------


@pytest.mark.cluster_gap(COUNTING_GAP)
def test_contract_ingest_counts_as_the_rules_say(backend: Backend, tmp_path: Path) -> None:
    config = backend.write_config(tmp_path / "pirus-bridge.yaml", gatherers=SINK)
    lines = write_log(tmp_path / "access.log", 3000, seed=5)
    counts, oai = model(backend, config, lines)
    assert sum(c["DC"] for m in counts.months.values() for c in m.values()) > 0
    assert {utc_month(a.ts) for a in counts.actions} == set(MONTHS)

    summary = backend.cli_json(config, "ingest", str(tmp_path / "access.log"))
    assert (summary["investigations"], summary["requests"]) == actions_by_metric(counts)
    assert summary["enqueued"] == {"irus": len(counts.actions)}
    assert_counts_match(backend, config, counts, oai)


@pytest.mark.cluster_gap(COUNTING_GAP)
def test_contract_replays_change_nothing(backend: Backend, tmp_path: Path) -> None:
    config = backend.write_config(tmp_path / "pirus-bridge.yaml", gatherers=SINK)
    log = tmp_path / "access.log"
    lines = write_log(log, 2000, seed=6)
    counts, oai = model(backend, config, lines)
    backend.cli_json(config, "ingest", str(log))

    again = backend.cli_json(config, "ingest", str(log))  # resumes at its checkpoint: the end
    piped = backend.cli_json(config, "ingest", "-", stdin="".join(lines))  # no checkpoint
    copy = tmp_path / "renamed.log"
    copy.write_text("".join(lines[:1500]))  # a shorter copy under another name
    renamed = backend.cli_json(config, "ingest", str(copy))
    for summary in (again, piped, renamed):
        assert (summary["investigations"], summary["requests"]) == (0, 0)
        assert summary["enqueued"] == {"irus": 0}
    assert piped["lines"] == len(lines)
    assert_counts_match(backend, config, counts, oai)


@pytest.mark.cluster_gap(COUNTING_GAP)
def test_contract_two_ingests_of_different_files_at_once(backend: Backend,
                                                         tmp_path: Path) -> None:
    config = backend.write_config(tmp_path / "pirus-bridge.yaml", gatherers=SINK,
                                  counting={"batch_size": 50})
    a = write_log(tmp_path / "a.log", 2500, seed=7)
    b = write_log(tmp_path / "b.log", 2500, seed=8)  # the same items, other people
    counts, oai = model(backend, config, a + b)
    procs = [(backend.start_cli(config, "ingest", "--json", str(tmp_path / name),
                                stderr=tmp_path / f"{name}.err"), tmp_path / f"{name}.err")
             for name in ("a.log", "b.log")]
    for proc, err in procs:
        backend.finished(proc, err)
    assert_counts_match(backend, config, counts, oai)


@pytest.mark.cluster_gap(COUNTING_GAP + "; the pusher's keys are all in ob:{g}'s slot, but "
                         "Outbox queues claim.lua and settle.lua with pipeline.eval() too")
def test_contract_pusher_killed_loses_nothing(backend: Backend, tmp_path: Path,
                                              gatherer: Gatherer) -> None:
    batch_size, lease_s = 20, 2
    config = backend.write_config(
        tmp_path / "pirus-bridge.yaml", outbox={"lease_s": lease_s},
        gatherers={"irus": {"url": gatherer.url, "metrics": ["request", "investigation"],
                            "batch_size": batch_size, "concurrency": 2,
                            "read_timeout_s": 1, "deadline_s": 1.5}})  # fmt: skip
    log = tmp_path / "usage.log"
    log.write_text("".join(usage_lines(400)))  # 400 qualifying events, no double-clicks
    total = backend.cli_json(config, "ingest", str(log))["enqueued"]["irus"]
    assert total == 400
    r = backend.client()

    gatherer.set_default(200, delay=0.02)  # slow enough to be caught mid-batch
    err = tmp_path / "push.err"
    proc = backend.start_cli(config, "push", "--once", stderr=err)
    try:
        assert wait_until(lambda: gatherer.received >= 60, timeout=30), err.read_text()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert gatherer.received < total, "the push finished before it was killed"
    assert backend.cli_json(config, "outbox", "stats")["irus"]["in_flight"] > 0

    gatherer.set_default(200)
    inflight = keys.outbox("irus", "inflight")
    assert wait_until(lambda: all(deadline < time.time() for _, deadline in
                                  r.zrange(inflight, 0, -1, withscores=True)),
                      timeout=lease_s + 5)  # the dead pusher's leases run out
    again = backend.cli_json(config, "push", "--once")
    assert again["irus"]["failed"] == 0
    counts = per_event(gatherer.requests)
    assert len(counts) == total  # every event delivered
    assert sum(n - 1 for n in counts.values()) <= batch_size  # duplicates: what was in flight
    stats = backend.cli_json(config, "outbox", "stats")["irus"]
    assert (stats["pending"], stats["in_flight"], stats["sent"], stats["failed"]) == (
        0, 0, total, 0)


@pytest.mark.cluster_gap(COUNTING_GAP)
def test_contract_master_restarted_under_aof_mid_run(backend: Backend, tmp_path: Path) -> None:
    config = backend.write_config(tmp_path / "pirus-bridge.yaml", gatherers=SINK,
                                  counting={"batch_size": 40})
    log = tmp_path / "access.log"
    lines = write_log(log, 4000, seed=9)
    counts, oai = model(backend, config, lines)
    busiest = max(counts.months, key=lambda i: sum(c["TII"] for c in counts.months[i].values()))
    server = backend.server_of(keys.counter_metrics(busiest))  # holds the busiest item
    server.use_aof()
    r = backend.client()
    source = keys.source_status(str(log))

    err = tmp_path / "ingest.err"
    proc = backend.start_cli(config, "ingest", "--json", str(log), stderr=err)
    try:
        # once some batches are in, freeze the run, restart the server under it, and let it go
        assert wait_until(lambda: proc.poll() is not None
                          or int(r.hget(source, "lines") or 0) >= 400, timeout=60,
                          interval=0.005), err.read_text()
        if proc.poll() is not None:
            backend.finished(proc, err)  # raises its error
            raise AssertionError("the run finished before the restart")
        os.kill(proc.pid, signal.SIGSTOP)
        assert wait_until(lambda: stopped(proc.pid), timeout=10)
        read = int(r.hget(source, "lines") or 0)
        assert read < len(lines), "the run finished before the restart"
        server.kill()
        server.start()
        backend.wait_ready()
        # every batch committed before the kill is back (one the run had already sent may
        # have been applied after the read above, never one less)
        assert int(r.hget(source, "lines") or 0) >= read
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
    proc.wait(60)
    # The run either met the dead connection and stopped, or (nothing in flight at the kill:
    # redis-py checks a pooled connection before use) went on against the restarted server.
    assert proc.returncode == 0 or "lost the connection to Redis" in err.read_text()
    done = int(r.hget(source, "lines") or 0)
    rerun = backend.cli_json(config, "ingest", str(log))  # resumes at the last committed batch
    assert rerun["lines"] == len(lines) - done
    assert_counts_match(backend, config, counts, oai)
