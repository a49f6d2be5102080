"""Shared by the live-pipeline tests: configs, subprocesses, logs and what to compare.

Every live run is checked against a bulk ``ingest`` of the same lines into another database of
the same redis-server (``/1``; the ``redis_url`` fixture's FLUSHALL empties it per test).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import redis
import yaml

from tests import helpers
from tests.helpers import ROOT

IRUS = {"irus": {"url": "http://127.0.0.1:9/counter/", "metrics": ["request", "investigation"]}}
MONTH = "2024-03"  # bench.loggen's default start is 2024-03-04
COUNTING = ("c:*", "dly:*", "u:*", "t:*", "d[vd]:*", "objectitems", "ob:*", "acct:*")
CATEGORY_KEYS = ("u:bothits", "u:objectviews", "u:fof", "u:other", "u:unparsed")
QUEUES = ("q:loglines", "q:count", "q:bothits", "q:objectviews", "q:fof", "q:other",
          "q:unparsed")
HEARTBEAT_S = "2"  # PIRUS_BRIDGE_HEARTBEAT_S for worker subprocesses: dead ones are found fast

_STAMP = re.compile(r"\[(\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d) ")


def db_url(url: str, db: int) -> str:
    """``url`` (which ends in ``/0``) pointing at database ``db``."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


def write_config(tmp_path: Path, url: str, *, name: str = "pirus-bridge.yaml",
                 batch_size: int = 500, **live: Any) -> Path:
    cfg: dict[str, Any] = {
        "redis": {"url": url},
        "repository": {
            "host": "eprints.example.ac.uk",
            "base_url": "https://eprints.example.ac.uk",
            "mapping": str(ROOT / "mappings" / "eprints3.yaml"),
        },
        "counting": {"salt": "live-test", "batch_size": batch_size},
        "gatherers": IRUS,
        "live": {"log_dir": str(tmp_path / "logs"), **live},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(config: Path, *args: str) -> str:
    """``pirus-bridge --config CONFIG ARGS…`` in-process (click's CliRunner); its stdout."""
    from click.testing import CliRunner

    from pirus_bridge.cli import cli as command

    result = CliRunner().invoke(command, ["--config", str(config), *args])
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def stop_all(processes: list[Process], timeout: float = 30) -> list[int]:
    """SIGTERM every process at once, then wait for each: their exit codes."""
    for p in processes:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
            p.terminated = True
    return [p.stop(timeout) for p in processes]


class Process:
    """A long-running ``pirus-bridge`` subprocess; stderr goes to a file (no pipe to fill)."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.errfile = config.parent / f"{'-'.join(args).replace('/', '_')}-{id(self)}.err"
        self._err: IO[bytes] = open(self.errfile, "wb")  # noqa: SIM115 - closed in stop/kill
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pirus_bridge", "--config", str(config), *args],
            stdout=subprocess.DEVNULL, stderr=self._err,
            env={**os.environ, "PIRUS_BRIDGE_HEARTBEAT_S": HEARTBEAT_S, **(env or {})},
        )
        self.pid = self.proc.pid
        self.terminated = False

    @property
    def stderr(self) -> str:
        return self.errfile.read_text()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (once: a second one during interpreter shutdown kills) and wait: the exit
        code."""
        if self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._err.close()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def stamp_key(line: str) -> tuple[int, int, int, int]:
    """A line's timestamp as a sortable tuple (all test logs are +0000)."""
    from bench.loggen import MONTHS

    m = _STAMP.search(line)
    assert m is not None, line
    d, mon, rest = m.group(1).split("/")
    year, hh, mm, ss = rest.split(":")
    return int(year), MONTHS.index(mon), int(d), int(hh) * 3600 + int(mm) * 60 + int(ss)


def generated_lines(tmp_path: Path, n: int, *, seed: int = 11, in_order: bool = True,
                    days: float = 2.0) -> list[str]:
    """``n`` lines of ``bench.loggen`` (newline-terminated), sorted by timestamp (stable)
    with ``in_order``. Counting does not depend on the order; the sorted logs are closer to
    what a web server writes."""
    from bench.loggen import generate_log

    path = tmp_path / f"gen-{seed}-{n}.log"
    generate_log(str(path), n, seed=seed, days=days)
    lines = path.read_text().splitlines(keepends=True)
    path.unlink()
    if in_order:
        lines.sort(key=stamp_key)
    return lines


def bulk_reference(tmp_path: Path, url: str, lines: list[str]) -> tuple[dict, Any]:
    """Counting keys and ``report --month`` of a bulk ``ingest`` of ``lines`` into db 1."""
    ref_url = db_url(url, 1)
    config = write_config(tmp_path, ref_url, name="reference.yaml")
    log = tmp_path / "reference.log"
    log.write_text("".join(lines))
    cli(config, "ingest", "--json", str(log))
    r = redis.Redis.from_url(ref_url)
    try:
        return snapshot(r, COUNTING), report(config)
    finally:
        r.close()


def snapshot(r: redis.Redis, patterns: tuple[str, ...] = COUNTING) -> dict[str, Any]:
    """Every counting key and its value (:func:`tests.helpers.snapshot` with these patterns)."""
    return helpers.snapshot(r, patterns)


def report(config: Path) -> Any:
    return json.loads(cli(config, "report", "--month", MONTH, "--format", "json"))


def lines_counted(r: redis.Redis) -> int:
    """Lines that reached the ``u:<category>`` counters."""
    return sum(int(v or 0) for v in r.mget(CATEGORY_KEYS))


def processing_items(r: redis.Redis) -> int:
    return sum(int(r.llen(k)) for k in r.scan_iter(match="q:processing:*"))


def pipeline_settled(r: redis.Redis, total: int) -> bool:
    """Every line through every queue worker: queues and processing lists empty, every line
    logged."""
    return (lines_counted(r) == total and not any(r.llen(q) for q in QUEUES)
            and processing_items(r) == 0)


def worker_keys(r: redis.Redis, pid: int, kind: str = "processing") -> list[str]:
    """The ``q:processing:*`` (or ``q:alive:*``) keys of the worker process ``pid``."""
    return [k.decode() for k in r.scan_iter(match=f"q:{kind}:*-{pid}-*")]
