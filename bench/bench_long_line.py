"""Peak memory of ``pirus-bridge ingest`` on an endless line.

``python bench/bench_long_line.py [--mib 128]`` writes a log whose first line is N MiB of NUL
bytes followed by one ordinary line, ingests it with the console script into a private
redis-server, and prints the process's peak resident memory (``ru_maxrss``) next to that of
ingesting the ordinary line alone: the difference is what the long line cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from tests.redis_server import RedisServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LINE = b'192.0.2.1 - - [14/Oct/2026:10:00:00 +0000] "GET /1234/ HTTP/1.1" 200 5 "-" "UA"\n'


def peak_rss_mib(config: Path, log: Path) -> tuple[float, dict]:
    """Run one ingest in a child process; its peak RSS (MiB) and its JSON summary."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "-m", "pirus_bridge", "--config", str(config),
                           "ingest", "--json", "--no-send", str(log)],
                          capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # RUSAGE_CHILDREN holds the largest child so far: run the small case first
    return max(after, before) / 1024, json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=128)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pb-long-line-"))
    server = RedisServer(work / "redis", appendonly=False).start()
    try:
        config = work / "pirus-bridge.yaml"
        config.write_text(yaml.safe_dump({
            "redis": {"url": server.url},
            "repository": {"host": "eprints.example.ac.uk",
                           "base_url": "https://eprints.example.ac.uk",
                           "mapping": str(ROOT / "mappings" / "eprints3.yaml")},
            "counting": {"salt": "bench"},
        }))
        small = work / "small.log"
        small.write_bytes(LINE)
        base, _ = peak_rss_mib(config, small)
        big = work / "long.log"
        with big.open("wb") as f:
            zeros = b"\0" * (1 << 20)
            for _ in range(args.mib):
                f.write(zeros)
            f.write(b"\n" + LINE)
        server.client().flushall()
        peak, summary = peak_rss_mib(config, big)
        print(f"ingest of one ordinary line:            peak RSS {base:7.1f} MiB")
        print(f"ingest of a {args.mib} MiB NUL line + that line: peak RSS {peak:7.1f} MiB "
              f"(+{peak - base:.1f} MiB); lines {summary['lines']}, unparsed "
              f"{summary['unparsed']}")
    finally:
        server.stop()
        for p in sorted(work.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        work.rmdir()


if __name__ == "__main__":
    main()
