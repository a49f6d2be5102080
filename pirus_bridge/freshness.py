"""How fresh each log source is: ``sources`` and ``src:<name>`` (see :mod:`pirus_bridge.keys`).

Whatever reads log lines into the counts (``ingest``, ``tail``, the queue workers) records, in
the transaction that commits a batch, when it last read a line of the source, the newest event
time it read, and how many lines it has read in all. The dashboard and ``/metrics`` show it, so
an admin sees a frozen pipeline ("the download counter has not moved for two weeks") at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.store import text

KINDS = ("ingest", "tail", "queue")


def source_name(path: str) -> str:
    """A source's name: the absolute path of a file, ``stdin`` for ``-``."""
    return "stdin" if path == "-" else os.path.abspath(path)


def record_read(pipe: redis.client.Pipeline, path: str, kind: str, *, lines: int,
                event_ts: int | None, now: float) -> None:
    """Queue on ``pipe`` that ``lines`` more lines of the source at ``path`` were read at
    ``now``, the newest event among them at ``event_ts`` (None: no usage event in them)."""
    name = source_name(path)
    key = keys.source_status(name)
    pipe.sadd(keys.SOURCES, name)
    fields: dict[Any, Any] = {"kind": kind, "path": path, "read_at": round(now, 3)}
    if event_ts is not None:
        fields["event_ts"] = int(event_ts)
    pipe.hset(key, mapping=fields)
    pipe.hincrby(key, "lines", lines)


@dataclass
class SourceStatus:
    """One log source's freshness."""

    name: str
    kind: str
    path: str
    read_at: float | None  # wall clock of the last line read
    event_ts: int | None  # the newest event time read
    lines: int

    def lag_s(self, now: float) -> float | None:
        """Seconds since a line was last read."""
        return None if self.read_at is None else max(0.0, now - self.read_at)

    def event_lag_s(self, now: float) -> float | None:
        """Seconds between the newest event read and now (how far behind the log is)."""
        return None if self.event_ts is None else max(0.0, now - self.event_ts)


def source_statuses(r: redis.Redis) -> list[SourceStatus]:
    """Every known log source, by name."""
    names = sorted(text(n) for n in r.smembers(keys.SOURCES))
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.source_status(name))
    out = []
    for name, raw in zip(names, pipe.execute(), strict=True):
        h = {text(k): text(v) for k, v in raw.items()}
        out.append(SourceStatus(
            name=name, kind=h.get("kind", ""), path=h.get("path", name),
            read_at=number_or_none(h.get("read_at")), event_ts=_whole(h.get("event_ts")),
            lines=_whole(h.get("lines")) or 0,
        ))
    return out


def number_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _whole(value: str | None) -> int | None:
    f = number_or_none(value)
    return None if f is None else int(f)
