"""Delivery throughput on loopback: a bare keep-alive requests loop vs the Sender (SPEC §9).

Runs the test gatherer (tests/gatherer.py) in a child process, so client and server do not share
one GIL, then sends the same N real IRUS KEV URLs (a) with a bare ``requests.Session`` loop and
(b) with :class:`pirus_bridge.sender.Sender` (and, for reference, (c) with stdlib http.client on
one connection, the cheapest general-purpose Python client), alternating for a few rounds and
keeping each one's best round. Prints events/s for each and the ratio Sender / bare (SPEC §9:
>= 0.8, >= 2000/s).

    .venv/bin/python bench/bench_sender.py [-n 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from pirus_bridge.contextobject import IRUS, build_kev, build_url  # noqa: E402
from pirus_bridge.events import MetricType, UsageEvent  # noqa: E402
from pirus_bridge.sender import Sender  # noqa: E402

HOST = "eprints.example.ac.uk"


def make_urls(base_url: str, n: int) -> list[str]:
    """Return ``n`` distinct IRUS KEV URLs for realistic downloads and views."""
    urls = []
    for i in range(n):
        item = 1000 + i % 700
        request = i % 3 != 0
        event = UsageEvent(
            ts=1_709_211_909 + i,
            item=str(item),
            oai_identifier=f"oai:{HOST}:{item}",
            metric=MetricType.REQUEST if request else MetricType.INVESTIGATION,
            url=f"https://{HOST}/{item}/1/paper_{item}.pdf"
            if request
            else f"https://{HOST}/{item}/",
            ip=f"192.0.2.{i % 250 + 1}",
            user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            referer="https://www.google.com/" if i % 2 else "",
            status=200,
        )
        urls.append(build_url(base_url, build_kev(event, profile=IRUS, repository_host=HOST)))
    return urls


def bare_loop(urls: list[str]) -> None:
    """The reference: one keep-alive session, GET, check for 2xx."""
    with requests.Session() as session:
        for url in urls:
            response = session.get(url, timeout=(10, 20))
            if not 200 <= response.status_code < 300:
                raise RuntimeError(f"unexpected status {response.status_code}")


def http_client_loop(urls: list[str]) -> None:
    """The cheapest general-purpose Python client: stdlib http.client on one kept-alive
    connection."""
    parts = urlsplit(urls[0])
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=20)
    try:
        for url in urls:
            target = url[url.index("/", len("http://")) :]
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise RuntimeError(f"unexpected status {response.status}")
    finally:
        conn.close()


def sender_loop(urls: list[str]) -> None:
    """The same work through pirus-bridge's Sender."""
    with Sender(connect_timeout=10, read_timeout=20, concurrency=1) as sender:
        for url in urls:
            sender.send(url)


def timed(fn: Callable[[list[str]], None], urls: list[str]) -> float:
    started = time.perf_counter()
    fn(urls)
    return len(urls) / (time.perf_counter() - started)


def main() -> None:
    """Start the gatherer, run both loops, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="events per loop (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per loop, best kept")
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-m", "tests.gatherer", "--no-record"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"gatherer did not start: {base_url!r}")
        urls = make_urls(base_url, args.n)
        timed(bare_loop, urls[:200])  # warm up both sides
        loops = {
            "bare requests.Session": bare_loop,
            "Sender": sender_loop,
            "stdlib http.client": http_client_loop,
        }
        best = dict.fromkeys(loops, 0.0)
        for _ in range(args.rounds):
            for name, loop in loops.items():
                best[name] = max(best[name], timed(loop, urls))
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"gatherer {base_url}  N={args.n}  best of {args.rounds} rounds")
    for name, rate in best.items():
        print(f"  {name:<24} {rate:9.0f} events/s")
    ratio = best["Sender"] / best["bare requests.Session"]
    floor = best["Sender"] / best["stdlib http.client"]
    print(f"  ratio Sender / bare requests   {ratio:6.2f}  (target >= 0.80)")
    print(f"  ratio Sender / http.client     {floor:6.2f}  (informative)")


if __name__ == "__main__":
    main()
