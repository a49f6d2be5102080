"""Benchmark what DSpace resolution costs the counting side when the endpoint is dead or slow.

``python bench/bench_metadata.py [--events N] [--ids K] [--delay S]`` starts a private
``redis-server`` and a DSpace REST stand-in on 127.0.0.1 that answers each request after
``--delay`` seconds, then times :meth:`MatchResolver.resolve_many` over N download events
(K distinct bitstream UUIDs, in batches of 2,000 as bulk ingest sends them) against:

- ``dead``: a closed port (connection refused): the circuit opens after 3 failures and every
  later lookup is answered UNAVAILABLE at once;
- ``slow``: the stand-in with its delay: lookups are answered PENDING while 4 background
  threads fetch, so the calling thread never waits for HTTP;
- ``warm``: the same ids again once all are resolved (the stand-in then answers at once):
  answered from the in-process cache;
- ``redis``: a new fetcher (a new run) over the same ids: one MGET per batch.

It prints µs per event on the calling (counting) thread, wall-clock seconds, and the
fetcher's counters. No event waits for the network in any of them.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pirus_bridge.events import MetricType  # noqa: E402
from pirus_bridge.mapping import MappingMatch, Resolve  # noqa: E402
from pirus_bridge.metadata import (  # noqa: E402
    PENDING,
    Breaker,
    DSpaceRestProvider,
    Fetcher,
    MatchResolver,
)
from tests.redis_server import RedisServer  # noqa: E402


def slow_server(delay: list[float]) -> ThreadingHTTPServer:
    """Answers every bitstream as an ORIGINAL file of one item, after ``delay[0]`` seconds."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay[0])
            bid = self.path.split("/")[5].split("?")[0]
            item = {"uuid": "i", "handle": "123456789/1", "inArchive": True, "type": "item"}
            bundle = {"uuid": "b", "name": "ORIGINAL", "type": "bundle",
                      "_embedded": {"item": item}}  # fmt: skip
            body = json.dumps({"uuid": bid, "type": "bitstream", "name": "a.pdf",
                               "_embedded": {"bundle": bundle}}).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/hal+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/server/api"


def run(label: str, resolver: MatchResolver, matches: list[MappingMatch]) -> None:
    """Resolve every match in batches; report counting-thread cost per event."""
    fetcher = resolver.fetcher
    assert fetcher is not None
    t_cpu, t_wall = time.thread_time(), time.perf_counter()
    pending = 0
    for i in range(0, len(matches), 2000):
        pending += sum(1 for a in resolver.resolve_many(matches[i:i + 2000]) if a is PENDING)
    cpu, wall = time.thread_time() - t_cpu, time.perf_counter() - t_wall
    s = fetcher.stats
    print(f"{label:6} {len(matches):>9,} events  {cpu / len(matches) * 1e6:6.2f} µs/event "
          f"(counting thread)  {wall:6.2f} s wall  pending {pending:,}  "
          f"unavailable {sum(s.unavailable.values()):,}  cached {sum(s.cached.values()):,}  "
          f"fetched {sum(s.fetched.values()):,}  failed {sum(s.failed.values()):,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--ids", type=int, default=20_000)
    ap.add_argument("--delay", type=float, default=1.5, help="seconds per answer when slow")
    args = ap.parse_args()
    ids = [str(uuid.UUID(int=i + 1)) for i in range(args.ids)]
    matches = [MappingMatch("bitstream-content", ids[i % len(ids)], None, MetricType.REQUEST,
                            "", Resolve.DSPACE_BITSTREAM) for i in range(args.events)]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False).start()
        try:
            r = server.client()
            dead = DSpaceRestProvider(dead_url(), "repo.example.org", timeout=(2, 5), attempts=1)
            fetcher = Fetcher(r, {"dspace-bitstream": dead.bitstream}, name="dead",
                              breaker=Breaker(3, 60))
            run("dead", MatchResolver(fetcher), matches)
            fetcher.close()
            r.flushall()
            delay = [args.delay]
            httpd = slow_server(delay)
            host, port = httpd.server_address[:2]
            slow = DSpaceRestProvider(f"http://{host!s}:{port}/server/api", "repo.example.org",
                                      timeout=(2, args.delay + 5), attempts=1)
            fetcher = Fetcher(r, {"dspace-bitstream": slow.bitstream}, name="slow")
            resolver = MatchResolver(fetcher)
            run("slow", resolver, matches)
            t0 = time.perf_counter()
            fetcher.wait(timeout=10)
            print(f"       background: {sum(fetcher.stats.fetched.values()):,} fetched in the "
                  f"next {time.perf_counter() - t0:.1f} s (4 threads, {args.delay} s each)")
            delay[0] = 0.0
            fetcher.wait()
            fetcher.stats.cached.clear()
            run("warm", resolver, matches)
            fetcher.close()
            fresh = Fetcher(r, {"dspace-bitstream": slow.bitstream}, name="slow")
            run("redis", MatchResolver(fresh), matches)
            fresh.close()
            httpd.shutdown()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
