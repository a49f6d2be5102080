"""Time to serve a one-year COUNTER R5.1 Item Report for 50,000 items (target: under 2 s).

Starts a private ``redis-server`` on a free port (never the shared one on 6379) and fills it
the way counting leaves it: ``objectitems``, one ``c:{item}`` hash per item with the four
COUNTER metrics for each month of 2025 (fields ``YYYY-MM:TII|UII|TIR|UIR``), and an ``md:{item}``
metadata hash with the parsed record as JSON. Then, over a few rounds, it times

* ``build``: :meth:`ReportService.item_report` in-process (read Redis + build the report),
* ``encode``: ``orjson.dumps`` of that report, as the response does,
* ``GET gzip`` / ``GET identity``: the whole HTTP exchange with the COUNTER API served by the
  real HttpServer on 127.0.0.1 (``/r51/reports/ir``), compressed (as harvesters ask) or not,

and prints the median and best of each, the report's size, and the Redis memory it used.

    .venv/bin/python bench/bench_counter_api.py [--items 50000] [--months 12] [--rounds 3]
        [--sparse 0.0]

``--sparse F`` leaves a fraction F of the item-months without usage (0.0: every item used in
every month, the worst case).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402

from pirus_bridge import keys  # noqa: E402
from pirus_bridge.config import parse_config  # noqa: E402
from pirus_bridge.r51.reader import UsageReader  # noqa: E402
from pirus_bridge.r51.request import parse_ir_request  # noqa: E402
from pirus_bridge.r51.service import ReportService  # noqa: E402
from pirus_bridge.web import WebContext, create_app  # noqa: E402
from pirus_bridge.web.server import HttpServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

NOW = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC).timestamp()
KEY = "bench-key"
TYPES = ["Article", "info:eu-repo/semantics/doctoralThesis", "Book Section", "Dataset",
         "Conference Paper", "Text"]


def fill(r: redis.Redis, items: int, months: list[str], sparse: float) -> None:
    rng = random.Random(51)
    batch = 1000
    for start in range(0, items, batch):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(items, start + batch)):
            item = str(10000 + i)
            fields: dict[Any, Any] = {}
            for m in months:
                if rng.random() < sparse:
                    continue
                tir = rng.randint(0, 40)
                uir = rng.randint(0, tir)
                tii = tir + rng.randint(1, 60)
                uii = rng.randint(max(1, uir), max(1, uir) + tii // 2)
                fields.update({f"{m}:TII": tii, f"{m}:UII": min(uii, tii), f"{m}:TIR": tir,
                               f"{m}:UIR": uir})
            if fields:
                pipe.hset(keys.counter_metrics(item), mapping=fields)
            pipe.sadd(keys.OBJECTITEMS, item)
            record: dict[str, Any] = {
                      "item": item, "oai_identifier": f"oai:eprints.example.ac.uk:{item}",
                      "title": f"Title of repository item number {item}",
                      "types": [TYPES[i % len(TYPES)]], "dates": [f"{1990 + i % 35}-03-01"],
                      "creators": ["Smith, Jane", "Doe, John"],
                      "doi": f"10.5555/bench.{item}" if i % 2 else None}
            pipe.hset(keys.metadata(item), mapping={
                "oai_identifier": record["oai_identifier"], "title": record["title"],
                "status": "ok", "json": json.dumps(record)})
        pipe.execute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sparse", type=float, default=0.0)
    args = ap.parse_args()
    months = [f"2025-{m:02d}" for m in range(1, args.months + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False).start()
        try:
            r = server.client()
            t0 = time.perf_counter()
            fill(r, args.items, months, args.sparse)
            used = int(r.info("memory")["used_memory"])
            print(f"redis-server {r.info()['redis_version']} on {server.url}: "
                  f"{args.items:,} items x {len(months)} months filled in "
                  f"{time.perf_counter() - t0:.1f}s, used_memory {used / 1e6:.0f} MB")
            cfg = parse_config({
                "redis": {"url": server.url},
                "repository": {"host": "eprints.example.ac.uk",
                               "base_url": "https://eprints.example.ac.uk",
                               "mapping": "mappings/eprints3.yaml"},
                "http": {"listen": "127.0.0.1:0"},
            }, base=ROOT)
            os.environ["PIRUS_BRIDGE_COUNTER_API_KEYS"] = KEY
            service = ReportService(cfg, UsageReader(r, lambda: NOW), lambda: NOW)
            params = {"customer_id": "0000000000000000", "api_key": KEY,
                      "begin_date": months[0], "end_date": months[-1],
                      "attributes_to_show": "YOP|Access_Type|Access_Method"}
            req = parse_ir_request(params, today=service.today(), platforms=service.platforms())
            t = time.perf_counter()
            service.reader.first_month()
            first = time.perf_counter() - t
            print(f"first month with usage (read once, then cached 5 min): {first:.2f}s")
            http = HttpServer(create_app(WebContext(cfg, r, clock=lambda: NOW)), cfg.http)
            http.start()
            url = f"http://127.0.0.1:{http.port}/r51/reports/ir"
            results: dict[str, list[float]] = {"build": [], "encode": [], "GET gzip": [],
                                               "GET identity": []}
            sizes: dict[str, int] = {}
            try:
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    report = service.item_report(req)
                    results["build"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    body = orjson.dumps(report)
                    results["encode"].append(time.perf_counter() - t)
                    sizes["json"] = len(body)
                    sizes["items"] = (len(report["Report_Items"][0]["Items"])
                                      if report["Report_Items"] else 0)
                    for name, encoding in (("GET gzip", "gzip"), ("GET identity", "identity")):
                        t = time.perf_counter()
                        with requests.get(url, params=params, timeout=120, stream=True,
                                          headers={"Accept-Encoding": encoding}) as answer:
                            wire = answer.raw.read(decode_content=False)
                            results[name].append(time.perf_counter() - t)
                            assert answer.status_code == 200, wire[:300]
                        sizes[encoding] = len(wire)
            finally:
                http.stop()
            print(f"report: {sizes['items']:,} items, {sizes['json'] / 1e6:.1f} MB JSON, "
                  f"{sizes['gzip'] / 1e6:.1f} MB gzipped")
            for name, values in results.items():
                print(f"  {name:<13} median {statistics.median(values):6.2f}s   "
                      f"best {min(values):6.2f}s   ({len(values)} rounds)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
