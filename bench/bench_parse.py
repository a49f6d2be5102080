"""Benchmark the per-line front half of the pipeline on a generated repository access log.

``python bench/bench_parse.py [--lines N] [--format combined] [--gzip]`` writes an N-line log
(see ``bench/loggen.py``) to a temporary file, then times reading alone
(``open_log(...).blocks()``, as bulk ingest reads), reading + parsing (``LogFormat.parse``),
and reading + parsing + classifying + mapping (the COUNTER robots list, ``Classifier.sort`` and
the shipped ``mappings/eprints3.yaml``) in one process, and prints lines/s and µs/line for
each. No Redis is involved. Times are CPU time of this process (``time.process_time``), so
other load on the machine skews them less.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loggen import generate_log  # noqa: E402
from pirus_bridge.classify import Category, Classifier, RobotDetector  # noqa: E402
from pirus_bridge.config import BotsConfig, CountingConfig  # noqa: E402
from pirus_bridge.logparse import LogFormat  # noqa: E402
from pirus_bridge.mapping import Mapping  # noqa: E402
from pirus_bridge.sources import open_log  # noqa: E402

MAPPING = Path(__file__).resolve().parent.parent / "mappings" / "eprints3.yaml"


def time_read(path: str) -> tuple[int, float]:
    """Read every line; return (lines, seconds)."""
    t0 = time.process_time()
    n = 0
    with open_log(path) as source:
        for block in source.blocks():
            n += len(block.texts)
    return n, time.process_time() - t0


def time_read_parse(path: str, spec: str) -> tuple[int, int, float]:
    """Read and parse every line; return (lines, unparsed, seconds)."""
    parse = LogFormat.compile(spec).parse
    t0 = time.process_time()
    n = bad = 0
    with open_log(path) as source:
        for block in source.blocks():
            n += len(block.texts)
            for rec in map(parse, block.texts):
                if rec is None:
                    bad += 1
    return n, bad, time.process_time() - t0


def time_read_parse_classify(path: str, spec: str) -> tuple[int, dict[str, int], float]:
    """Read, parse, classify and map every line; return (lines, per category, seconds)."""
    parse = LogFormat.compile(spec).parse
    mapping = Mapping.load(MAPPING, host="eprints.example.ac.uk",
                           base_url="https://eprints.example.ac.uk")
    sort = Classifier(RobotDetector(BotsConfig()), mapping, CountingConfig()).sort
    counts = dict.fromkeys([c.value for c in Category], 0)
    t0 = time.process_time()
    n = 0
    with open_log(path) as source:
        for block in source.blocks():
            n += len(block.texts)
            for category, k in sort(map(parse, block.texts)).counts.items():
                counts[category] += k
    return n, counts, time.process_time() - t0


def time_parse_only(path: str, spec: str, limit: int = 200_000) -> tuple[int, float]:
    """Parse up to ``limit`` lines already in memory; return (lines, seconds)."""
    parse = LogFormat.compile(spec).parse
    with open(path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for _, line in zip(range(limit), f, strict=False)]
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for text in texts:
            parse(text)
        best = min(best, time.process_time() - t0)
    return len(texts), best


def report(label: str, lines: int, seconds: float) -> None:
    """Print one benchmark result line."""
    print(f"{label:30} {lines / seconds:12,.0f} lines/s  {seconds / lines * 1e6:6.2f} µs/line")


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--format", default="combined")
    ap.add_argument("--gzip", action="store_true", help="also time a gzipped copy")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-parse-")
    try:
        path = os.path.join(tmp, "access.log")
        t0 = time.perf_counter()
        generate_log(path, args.lines, seed=args.seed)
        print(f"generated {args.lines:,} lines in {time.perf_counter() - t0:.1f} s ({path})")
        n, secs = time_parse_only(path, args.format)
        report("parse only", n, secs)
        n, secs = time_read(path)
        report("read", n, secs)
        n, bad, secs = time_read_parse(path, args.format)
        report("read + parse", n, secs)
        if bad:
            print(f"  ({bad:,} lines did not parse)")
        n, counts, secs = time_read_parse_classify(path, args.format)
        report("read + parse + classify + map", n, secs)
        print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        if args.gzip:
            gz = path + ".gz"
            with open(path, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst)
            n, bad, secs = time_read_parse(gz, args.format)
            report("read + parse (gzip)", n, secs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
