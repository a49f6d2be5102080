"""Delivery transports on loopback, one keep-alive connection each: which HTTP library to build on.

Runs the test gatherer (tests/gatherer.py) in a child process, so client and server do not share
one GIL, then sends the same N real IRUS KEV URLs with

* a bare ``http.client.HTTPConnection`` loop (the standard library),
* a bare urllib3 ``HTTPConnectionPool`` loop (``retries=False``, ``redirect=False``),
* pirus-bridge's :class:`~pirus_bridge.sender.Sender` (built on ``http.client``: deadline,
  redirect policy, proxy routing, the pool), and
* a bare ``requests.Session`` loop, for reference,

alternating for a few rounds, and prints each one's median events/s and the ratios Sender /
http.client and urllib3 / http.client.

    .venv/bin/python bench/bench_sender.py [-n 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import urllib3  # noqa: E402

from pirus_bridge.contextobject import IRUS, build_kev, build_url  # noqa: E402
from pirus_bridge.events import MetricType, UsageEvent  # noqa: E402
from pirus_bridge.sender import USER_AGENT, Sender  # noqa: E402

HOST = "eprints.example.ac.uk"
# What the Sender sends besides Host (and Accept-Encoding: identity, which the bare loops'
# libraries add themselves): the same bytes reach the gatherer from every loop.
HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*"}


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


def _target(url: str) -> str:
    return url[url.index("/", len("http://")) :]


def http_client_loop(urls: list[str]) -> None:
    """The standard library's http.client on one kept-alive connection."""
    parts = urlsplit(urls[0])
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=20)
    try:
        for url in urls:
            conn.request("GET", _target(url), headers=HEADERS)
            response = conn.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise RuntimeError(f"unexpected status {response.status}")
    finally:
        conn.close()


def urllib3_loop(urls: list[str]) -> None:
    """urllib3's connection pool, one connection, no retries or redirects of its own."""
    parts = urlsplit(urls[0])
    with urllib3.HTTPConnectionPool(parts.hostname or "127.0.0.1", parts.port, maxsize=1,
                                    timeout=urllib3.Timeout(connect=10, read=20),
                                    retries=False) as pool:
        for url in urls:
            response = pool.urlopen("GET", _target(url), headers=HEADERS, retries=False,
                                    redirect=False)
            if not 200 <= response.status < 300:
                raise RuntimeError(f"unexpected status {response.status}")


def sender_loop(urls: list[str]) -> None:
    """The same work through pirus-bridge's Sender."""
    with Sender(connect_timeout=10, read_timeout=20, deadline=30, concurrency=1) as sender:
        for url in urls:
            sender.send(url)


def requests_loop(urls: list[str]) -> None:
    with requests.Session() as session:
        for url in urls:
            response = session.get(url, headers=HEADERS, timeout=(10, 20))
            if not 200 <= response.status_code < 300:
                raise RuntimeError(f"unexpected status {response.status_code}")


def timed(fn: Callable[[list[str]], None], urls: list[str]) -> float:
    started = time.perf_counter()
    fn(urls)
    return len(urls) / (time.perf_counter() - started)


def main() -> None:
    """Start the gatherer, run the loops, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="events per loop (default 5000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per loop (median kept)")
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
        timed(http_client_loop, urls[:500])  # warm up both sides
        loops = {
            "http.client": http_client_loop,
            "urllib3": urllib3_loop,
            "Sender (http.client)": sender_loop,
            "requests": requests_loop,
        }
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(args.rounds):
            for name, loop in loops.items():
                rates[name].append(timed(loop, urls))
    finally:
        server.terminate()
        server.wait(timeout=10)

    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"gatherer {base_url}  N={args.n}  median of {args.rounds} rounds")
    for name, rate in median.items():
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        print(f"  {name:<22} {rate:9.0f} events/s   (range {spread})")
    floor = median["http.client"]
    print(f"  ratio Sender / http.client    {median['Sender (http.client)'] / floor:6.2f}")
    print(f"  ratio urllib3 / http.client   {median['urllib3'] / floor:6.2f}")


if __name__ == "__main__":
    main()
