"""The live paths end to end: ``tail`` across rotation and SIGKILL, and bulk vs live equality.

Each test runs real ``pirus-bridge`` subprocesses against the session's redis-server and
compares what they counted (every counting key, the outbox, ``report --month``) with a bulk
``ingest`` of the same lines into database 1.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from pathlib import Path

import redis

from pirus_bridge.loghandler import DROPPED, RedisLogHandler
from tests.helpers import wait_until
from tests.live_support import (
    COUNTING,
    Process,
    bulk_reference,
    db_url,
    generated_lines,
    lines_counted,
    pipeline_settled,
    report,
    snapshot,
    stop_all,
    write_config,
)


def append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8", newline="\n") as f:
        f.write("".join(lines))


def checkpoint(r: redis.Redis, log: Path) -> dict[str, str]:
    raw: dict[bytes, bytes] = r.hgetall(f"tail:{log.resolve()}")  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def tail_settled(r: redis.Redis, log: Path, total: int) -> bool:
    """All ``total`` lines committed, their position saved."""
    return lines_counted(r) == total and int(checkpoint(r, log).get("line", 0)) >= 0




def test_tail_rename_and_copytruncate_rotation_equals_bulk(
    tmp_path: Path, redis_url: str, r: redis.Redis, procs: list[Process]
) -> None:
    lines = generated_lines(tmp_path, 6000)
    a1, a2, b1, b2, c1, c2 = (lines[i:i + 1000] for i in range(0, 6000, 1000))
    c1, c2 = c1[:5], c1[5:] + c2  # only a few lines at first after the truncation
    log = tmp_path / "access.log"
    config = write_config(tmp_path, redis_url)
    append(log, a1)
    tail = Process(config, "tail", str(log))
    procs.append(tail)
    assert wait_until(lambda: lines_counted(r) == 1000, timeout=30), tail.stderr
    first = checkpoint(r, log)["identity"]

    # rename: lines written just before the rename are read from the renamed file
    append(log, a2)
    os.rename(log, tmp_path / "access.log.1")
    append(log, b1)
    assert wait_until(lambda: lines_counted(r) == 3000, timeout=30), tail.stderr
    second = checkpoint(r, log)["identity"]
    assert second != first

    # copytruncate (older copies shifted first, as logrotate does): the lines not yet read
    # when the file is copied are read from the copy, found by its first line
    append(log, b2)
    os.rename(tmp_path / "access.log.1", tmp_path / "access.log.2")
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    # the truncation is seen only while the file is shorter than the offset already read,
    # as with any copytruncate follower: write a little, wait for it, then the rest
    append(log, c1)
    assert wait_until(lambda: lines_counted(r) == 4005, timeout=30), tail.stderr
    assert wait_until(lambda: checkpoint(r, log)["identity"] not in (first, second))
    append(log, c2)
    assert wait_until(lambda: tail_settled(r, log, 6000), timeout=30), tail.stderr
    assert tail.stop() == 0, tail.stderr
    assert "stopped: 6,000 line(s)" in tail.stderr

    expected, expected_report = bulk_reference(tmp_path, redis_url, lines)
    assert report(config) == expected_report
    assert expected_report and all(row["Total_Item_Investigations"] for row in expected_report)
    assert snapshot(r, COUNTING) == expected


def test_tail_sigkill_and_rotation_while_down_equals_bulk(
    tmp_path: Path, redis_url: str, r: redis.Redis, procs: list[Process]
) -> None:
    lines = generated_lines(tmp_path, 50_000, seed=5)
    log = tmp_path / "access.log"
    config = write_config(tmp_path, redis_url)
    chunks = [lines[i:i + 5000] for i in range(0, 30_000, 5000)]
    append(log, chunks[0])
    tail = Process(config, "tail", str(log))
    procs.append(tail)
    for chunk in chunks[1:]:  # appended while it runs, each once it has made some progress
        done = lines_counted(r)
        assert wait_until(lambda d=done: lines_counted(r) > d, timeout=30), tail.stderr
        append(log, chunk)
    assert wait_until(lambda: lines_counted(r) > 20_000, timeout=30, interval=0.005), tail.stderr
    tail.kill()
    killed_at = lines_counted(r)
    assert killed_at < 30_000, "the tail finished before it was killed"
    saved = checkpoint(r, log)
    assert int(saved["line"]) == killed_at  # the position commits with the counts

    # while it is down: more lines, then rotation by rename with compression, and a new file
    append(log, lines[30_000:35_000])
    with gzip.open(tmp_path / "access.log.1.gz", "wb") as z:
        z.write(log.read_bytes())
    log.unlink()
    append(log, lines[35_000:45_000])

    tail = Process(config, "tail", str(log))
    procs.append(tail)
    # killed again, if we catch it, while it is still reading the compressed file
    wait_until(lambda: lines_counted(r) > killed_at + 1000, timeout=30, interval=0.005)
    tail.kill()
    again = checkpoint(r, log)
    in_old_file = again["identity"] == saved["identity"]
    assert lines_counted(r) == int(again["line"]) + (0 if in_old_file else 35_000)

    tail = Process(config, "tail", str(log))
    procs.append(tail)
    assert wait_until(lambda: lines_counted(r) >= 45_000, timeout=30), tail.stderr
    append(log, lines[45_000:])
    assert wait_until(lambda: tail_settled(r, log, 50_000), timeout=30), tail.stderr
    assert tail.stop() == 0, tail.stderr

    expected, expected_report = bulk_reference(tmp_path, redis_url, lines)
    assert snapshot(r, COUNTING) == expected
    assert report(config) == expected_report


def test_bulk_tail_and_queue_workers_report_the_same(
    tmp_path: Path, redis_url: str, r: redis.Redis, procs: list[Process]
) -> None:
    # Lines a few seconds out of order, as real logs are: every path reorders them alike.
    lines = generated_lines(tmp_path, 8000, seed=3, in_order=False, days=0.5)
    expected, expected_report = bulk_reference(tmp_path, redis_url, lines)
    assert expected_report

    # (b) tail
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    tail_config = write_config(tmp_path, redis_url, name="tail.yaml")
    tail = Process(tail_config, "tail", str(log))
    procs.append(tail)

    # (c) the queue workers, fed by RedisLogHandler from this (host application's) process
    queue_url = db_url(redis_url, 2)
    rq = redis.Redis.from_url(queue_url)
    workers_config = write_config(tmp_path, queue_url, name="workers.yaml", batch_size=200)
    workers = [Process(workers_config, "worker", role)
               for role in ("classifier", "counter", "logger")]
    procs.extend(workers)
    handler = RedisLogHandler(queue_url, capacity=len(lines))
    access = logging.getLogger("tests.live.access")
    access.propagate = False
    access.setLevel(logging.INFO)
    access.addHandler(handler)
    try:
        for line in lines:
            access.info(line.rstrip("\n"))
        handler.flush()
    finally:
        access.removeHandler(handler)
        handler.close()

    assert wait_until(lambda: tail_settled(r, log, len(lines)), timeout=30), tail.stderr
    assert wait_until(lambda: pipeline_settled(rq, len(lines)), timeout=30), [
        w.stderr for w in workers]
    assert stop_all([tail, *workers]) == [0, 0, 0, 0], [w.stderr for w in workers]
    assert rq.get(DROPPED) is None

    assert report(tail_config) == expected_report
    assert report(workers_config) == expected_report
    assert snapshot(r, COUNTING) == expected
    assert snapshot(rq, COUNTING) == expected
    rq.close()


def test_serve_runs_tails_and_queue_workers(
    tmp_path: Path, redis_url: str, r: redis.Redis, procs: list[Process]
) -> None:
    # serve with live.tail and live.queue_workers counts a followed file and q:loglines in one
    # process; one log is from March, the other from April, so they cannot interact.
    march = generated_lines(tmp_path, 3000, seed=8)
    april = [line.replace("/Mar/2024:", "/Apr/2024:") for line in generated_lines(
        tmp_path, 3000, seed=9)]
    log = tmp_path / "access.log"
    log.write_text("".join(march))
    config = write_config(tmp_path, redis_url, tail=[str(log)], queue_workers=True)
    serve = Process(config, "serve")
    procs.append(serve)
    r.lpush("q:loglines", *april)
    both = len(march) + len(april)
    assert wait_until(lambda: lines_counted(r) == both
                      and pipeline_settled(r, both), timeout=30), serve.stderr
    assert serve.stop() == 0, serve.stderr
    assert "stopped cleanly" in serve.stderr

    expected, _ = bulk_reference(tmp_path, redis_url, march + april)
    assert snapshot(r, COUNTING) == expected
