"""Reading what the R5.1 reports need from Redis: counts and metadata, pipelined.

This is the only module of the reports that touches Redis, and it names the keys only through
:mod:`pirus_bridge.keys` (``objectitems``, ``c:{item}`` with fields ``YYYY-MM:<code>``, and
``md:{item}``). Items are read in chunks, each chunk one pipelined round trip (no transaction:
a report reads closed months, which no longer change, and pipelines without MULTI also work on
Redis Cluster).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.r51.items import Describer, ItemElements
from pirus_bridge.r51.report import ItemUsage

CHUNK = 1000  # items per round trip
CODES = (keys.TII, keys.UII, keys.TIR, keys.UIR)
METRIC_NAMES = tuple(keys.METRIC_NAMES[c] for c in CODES)
# Read an item's counts whole when the months asked are at least 1/WHOLE_READ_RATIO of the
# months stored: HMGET of n fields scans a small (listpack) hash n times.
WHOLE_READ_RATIO = 4
DESCRIBED_LIMIT = 500_000  # items whose elements are remembered between reports
METADATA_FIELDS = ("oai_identifier", "title", "doi", "json")
FIRST_MONTH_TTL_S = 300.0  # how long the first month with usage is remembered


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def metadata_record(raw: Sequence[bytes | None]) -> dict[str, Any]:
    """An item's metadata from its ``md:{item}`` fields (:data:`METADATA_FIELDS`): the parsed
    record (``json``), with ``oai_identifier``, ``title`` and ``doi`` filled from the hash's own
    fields where the record lacks them; ``{}`` when there is nothing."""
    oai, title, doi, record = raw
    md: dict[str, Any] = {}
    if record:
        try:
            parsed = json.loads(record)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            md = parsed
    for name, value in (("oai_identifier", oai), ("title", title), ("doi", doi)):
        if value and not md.get(name):
            md[name] = _text(value)
    return md


class UsageReader:
    """Counts and metadata of the counted items, for the reports."""

    def __init__(self, r: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self.r = r
        self.clock = clock
        self._first: tuple[float, str | None] | None = None
        self._lock = threading.Lock()
        self._described: dict[tuple[Any, ...], ItemElements] = {}

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.r.ping())
        except (redis.RedisError, OSError):
            return False

    def items(self) -> list[str]:
        """Every counted item id (the seed's ``objectitems``)."""
        return [_text(m) for m in self.r.smembers(keys.OBJECTITEMS)]

    def _chunks(self, items: Sequence[str]) -> Iterator[Sequence[str]]:
        for start in range(0, len(items), CHUNK):
            yield items[start:start + CHUNK]

    def usage(self, months: Sequence[str], describer: Describer,
              span: int | None = None) -> list[ItemUsage]:
        """Every item with usage in ``months`` (``YYYY-MM``): its counts there, as
        ``{Metric_Type: {month: n}}`` (months in the order given, zeros left out), and its R5.1
        elements from its metadata.

        ``span`` is the number of months with usage stored, when known. Asking for most of them,
        each item's counts are read whole (HGETALL, then filtered here), which Redis answers
        several times faster than a field list on a small hash; asking for a few months of a
        long history, only their fields are read (HMGET)."""
        if not months:
            return []
        width = len(months)
        # metric-major: every month of TII, then of UII, ...
        fields = tuple(f"{m}:{c}".encode() for c in CODES for m in months)
        whole = span is not None and len(months) * WHOLE_READ_RATIO >= span
        out: list[ItemUsage] = []
        for chunk in self._chunks(self.items()):
            pipe = self.r.pipeline(transaction=False)
            for item in chunk:
                if whole:
                    pipe.execute_command("HGETALL", keys.counter_metrics(item))
                else:
                    pipe.execute_command("HMGET", keys.counter_metrics(item), *fields)
            found: list[tuple[str, dict[str, dict[str, int]]]] = []
            for item, reply in zip(chunk, pipe.execute(), strict=True):
                if not reply:
                    continue
                values = list(map(reply.get, fields)) if whole else reply
                counts: dict[str, dict[str, int]] = {}
                for k, name in enumerate(METRIC_NAMES):
                    row = values[k * width:(k + 1) * width]
                    if None in row or b"0" in row:  # some months without usage
                        by_month = {m: int(x) for m, x in zip(months, row, strict=True)
                                    if x and x != b"0"}
                    else:
                        by_month = dict(zip(months, map(int, row), strict=True))
                    if by_month:
                        counts[name] = by_month
                if counts:
                    found.append((item, counts))
            if found:
                elements = self.describe([item for item, _ in found], describer)
                out += map(ItemUsage, elements, (counts for _, counts in found))
        return out

    def describe(self, items: Sequence[str], describer: Describer) -> list[ItemElements]:
        """The R5.1 elements of each item, from its ``md:{item}`` hash. An item whose hash is
        unchanged since the last call is not parsed again."""
        pipe = self.r.pipeline(transaction=False)
        for item in items:
            pipe.execute_command("HMGET", keys.metadata(item), *METADATA_FIELDS)
        out = []
        for item, raw in zip(items, pipe.execute(), strict=True):
            key = (item, id(describer), *raw)
            found = self._described.get(key)
            if found is None:
                found = describer.describe(item, metadata_record(raw))
                if len(self._described) >= DESCRIBED_LIMIT:
                    self._described.clear()
                self._described[key] = found
            out.append(found)
        return out

    def first_month(self) -> str | None:
        """The earliest ``YYYY-MM`` with any count, or None; remembered for a few minutes
        (finding it reads every item's field names)."""
        now = self.clock()
        with self._lock:
            if self._first is not None and now - self._first[0] < FIRST_MONTH_TTL_S:
                return self._first[1]
        first: str | None = None
        for chunk in self._chunks(self.items()):
            pipe = self.r.pipeline(transaction=False)
            for item in chunk:
                pipe.hkeys(keys.counter_metrics(item))
            for names in pipe.execute():
                if names:  # fields are YYYY-MM:<code>, so the least is of the earliest month
                    month = _text(min(names))[:7]
                    if first is None or month < first:
                        first = month
        with self._lock:
            self._first = (now, first)
        return first
