"""Non-blocking resolution: answers at once from the cache, fetches in the background.

Counting must never wait for a metadata endpoint (SPEC §5). A :class:`Fetcher` answers each
lookup immediately with the cached :class:`~pirus_bridge.metadata.resolution.Resolution`, or
:data:`PENDING` (a fetch is queued on a small thread pool), or :data:`UNAVAILABLE` (the
endpoint's circuit is open: it failed ``failure_threshold`` times in a row, so nothing is
fetched until ``probe_after_s`` has passed, when one probe is let through). A dead endpoint
costs one warning, not a timeout per item.

Answers, negative ones too (a thumbnail, a collection, no such object), are kept in Redis under
``rs:<kind>:{<id>}`` (``keys.resolution``) and in a bounded in-process map; failures are not
cached. :meth:`Fetcher.ready` hands over what was resolved since the last call, so the counting
side can count the events it parked; :meth:`Fetcher.wait` waits for the fetches under way (at
the end of a bulk run).

What the counting side does with each answer (the rule the lead wires in):

- a Resolution: :func:`~pirus_bridge.metadata.resolution.apply` gives the match to count, or
  None (not usage);
- PENDING: park the event (its day is still open: counting is order-independent) and count it
  when :meth:`ready` delivers its id; at the end of a run, :meth:`wait` then count or report;
- UNAVAILABLE: for ``item`` and ``main-file`` rules count it as the URL says (the behaviour of
  a site without a provider); for ``dspace-*`` rules keep it parked, or count it as
  undeliverable (no identifier) if its day closes first, and say so in the summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from typing import Any

import redis
import requests

from pirus_bridge import keys
from pirus_bridge.config import Config
from pirus_bridge.events import MetricType
from pirus_bridge.mapping import MappingMatch, Resolve
from pirus_bridge.metadata.dspace import DSpaceRestProvider
from pirus_bridge.metadata.model import ItemMetadata, MetadataError, MetadataProvider
from pirus_bridge.metadata.oai import OaiPmhProvider
from pirus_bridge.metadata.resolution import (
    PENDING,
    UNAVAILABLE,
    Resolution,
    _Marker,
    apply,
    judge_item,
    judge_main_file,
)
from pirus_bridge.metadata.solr import SolrProvider

log = logging.getLogger(__name__)

Answer = Resolution | _Marker
Lookup = Callable[[str], Resolution]  # raises MetadataError (or a requests error) on failure


class Breaker:
    """An endpoint-wide circuit breaker (pure; the clock is injected).

    Closed: every call is allowed. ``threshold`` consecutive failures open it: nothing is
    allowed until ``probe_after_s`` has passed, then one probe; its success closes the circuit,
    its failure opens it for another ``probe_after_s``.
    """

    def __init__(self, threshold: int = 3, probe_after_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.probe_after_s = probe_after_s
        self.clock = clock
        self.failures = 0
        self.open_until: float | None = None  # None: closed
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allow(self) -> bool:
        """May a call go to the endpoint now? (An open circuit lets one probe through.)"""
        with self._lock:
            if self.open_until is None:
                return True
            if self._probing or self.clock() < self.open_until:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self.failures, self.open_until, self._probing = 0, None, False

    def failure(self) -> bool:
        """Record a failed call; True when this failure opened a closed circuit."""
        with self._lock:
            self.failures += 1
            was_open = self.open_until is not None
            self._probing = False
            if was_open or self.failures >= self.threshold:
                self.open_until = self.clock() + self.probe_after_s
            return not was_open and self.open_until is not None


@dataclass
class FetcherStats:
    """Counters for a run's summary line (per lookup kind)."""

    cached: dict[str, int] = field(default_factory=dict)  # answered from a cache
    fetched: dict[str, int] = field(default_factory=dict)  # answered by the endpoint
    failed: dict[str, int] = field(default_factory=dict)  # fetches that failed
    unavailable: dict[str, int] = field(default_factory=dict)  # answered UNAVAILABLE
    opened: int = 0  # times the circuit opened

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, counter: dict[str, int], kind: str, n: int = 1) -> None:
        with self._lock:
            counter[kind] = counter.get(kind, 0) + n


class Fetcher:
    """Lookups by kind (``dspace-bitstream``, ``dspace-item``, ``item``, ``main-file``) → answers.

    ``lookups`` maps each kind to a blocking function that asks the endpoint; they share one
    endpoint, hence one :class:`Breaker`. ``name`` names the endpoint in warnings.
    """

    def __init__(
        self,
        r: redis.Redis,
        lookups: Mapping[str, Lookup],
        *,
        name: str = "metadata",
        workers: int = 4,
        breaker: Breaker | None = None,
        ttl_s: int = 30 * 86400,
        negative_ttl_s: int = 7 * 86400,
        local_size: int = 100_000,
    ) -> None:
        self.r = r
        self.lookups = dict(lookups)
        self.name = name
        self.breaker = breaker or Breaker()
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.local_size = local_size
        self.stats = FetcherStats()
        self._local: OrderedDict[tuple[str, str], Resolution] = OrderedDict()
        self._inflight: dict[tuple[str, str], Future[None]] = {}
        # ids whose fetch failed lately: answered UNAVAILABLE until the endpoint is due a probe
        self._failed: dict[tuple[str, str], float] = {}
        self._ready: list[tuple[str, str, Resolution]] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resolve")

    # -- answering (never blocks on the endpoint) ---------------------------------------------

    def resolve(self, kind: str, key: str) -> Answer:
        """One lookup; see :meth:`resolve_many`."""
        return self.resolve_many(kind, (key,))[key]

    def resolve_many(self, kind: str, ids: Iterable[str]) -> dict[str, Answer]:
        """Answer every id now: its Resolution, PENDING (fetch queued) or UNAVAILABLE.

        Costs an in-process lookup per id and at most one Redis round trip (MGET) for the ids
        not in memory; never an HTTP call on the calling thread.
        """
        if kind not in self.lookups:
            raise KeyError(f"no lookup for {kind!r}; configured: {', '.join(self.lookups)}")
        answers: dict[str, Answer] = {}
        missing: list[str] = []
        with self._lock:
            for key in dict.fromkeys(ids):
                hit = self._local.get((kind, key))
                if hit is not None:
                    self._local.move_to_end((kind, key))
                    answers[key] = hit
                else:
                    missing.append(key)
        self.stats.add(self.stats.cached, kind, len(answers))
        if not missing:
            return answers
        stored = self.r.mget([keys.resolution(kind, k) for k in missing])
        for key, raw in zip(missing, stored, strict=True):
            if raw is not None:
                try:
                    res = Resolution.from_json(raw)
                except MetadataError:
                    raw = None  # unreadable: fetch it again
                else:
                    self._remember(kind, key, res)
                    self.stats.add(self.stats.cached, kind)
                    answers[key] = res
            if raw is None:
                answers[key] = self._schedule(kind, key)
        return answers

    def _schedule(self, kind: str, key: str) -> Answer:
        with self._lock:
            if (kind, key) in self._inflight:
                return PENDING
            failed_at = self._failed.get((kind, key))
            if failed_at is not None:
                if self.breaker.clock() - failed_at < self.breaker.probe_after_s:
                    self.stats.add(self.stats.unavailable, kind)
                    return UNAVAILABLE
                del self._failed[(kind, key)]
            probe = self.breaker.is_open
            if not self.breaker.allow():
                self.stats.add(self.stats.unavailable, kind)
                return UNAVAILABLE
            self._inflight[(kind, key)] = self._pool.submit(self._fetch, kind, key, probe)
        return PENDING

    @property
    def pending(self) -> int:
        """Fetches queued or under way."""
        with self._lock:
            return len(self._inflight)

    # -- the background side ------------------------------------------------------------------

    def _fetch(self, kind: str, key: str, probe: bool) -> None:
        try:
            if self.breaker.is_open and not probe:  # opened while this one was queued
                self.stats.add(self.stats.unavailable, kind)
                return
            try:
                res = self.lookups[kind](key)
            except (MetadataError, requests.RequestException) as e:
                self.stats.add(self.stats.failed, kind)
                self._note_failure(kind, key)
                if self.breaker.failure():
                    self.stats.opened += 1
                    log.warning("%s endpoint is failing (%s): lookups are answered "
                                "'unavailable' and it is probed again every %g s",
                                self.name, e, self.breaker.probe_after_s)  # fmt: skip
                return
            except Exception:  # a broken lookup must not kill the pool thread
                self.stats.add(self.stats.failed, kind)
                self._note_failure(kind, key)
                self.breaker.failure()
                log.exception("%s lookup of %s %s failed", self.name, kind, key)
                return
            self.breaker.success()
            self.stats.add(self.stats.fetched, kind)
            ttl = self.ttl_s if res.counts else self.negative_ttl_s
            self.r.set(keys.resolution(kind, key), res.to_json(), ex=ttl)
            self._remember(kind, key, res)
            with self._lock:
                self._ready.append((kind, key, res))
        finally:
            with self._lock:
                self._inflight.pop((kind, key), None)

    def _note_failure(self, kind: str, key: str) -> None:
        with self._lock:
            if len(self._failed) >= self.local_size:
                self._failed.clear()
            self._failed[(kind, key)] = self.breaker.clock()

    def _remember(self, kind: str, key: str, res: Resolution) -> None:
        with self._lock:
            self._local[(kind, key)] = res
            self._local.move_to_end((kind, key))
            while len(self._local) > self.local_size:
                self._local.popitem(last=False)

    # -- handing results over -----------------------------------------------------------------

    def ready(self) -> list[tuple[str, str, Resolution]]:
        """``(kind, id, resolution)`` fetched since the last call (each handed over once)."""
        with self._lock:
            out, self._ready = self._ready, []
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the fetches under way; True if none is left."""
        with self._lock:
            futures = list(self._inflight.values())
        if futures:
            wait_futures(futures, timeout=timeout)
        return self.pending == 0

    def summary(self) -> list[str]:
        """Lines for a run's summary: what waits, what could not be had, and why."""
        lines = []
        s = self.stats
        for kind in self.lookups:
            if s.unavailable.get(kind):
                lines.append(f"{self.name} endpoint down: {s.unavailable[kind]} {kind} lookups "
                             "answered without it")  # fmt: skip
        waiting = self.pending
        if waiting:
            lines.append(f"{waiting} lookups waiting for the {self.name} endpoint")
        return lines

    def close(self) -> None:
        """Stop the pool; fetches not started are dropped (they are asked again next run)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


Fetch = Callable[[str], "ItemMetadata | None"]  # an item's metadata; None: no such item


def provider_fetch(provider: MetadataProvider) -> Fetch:
    """A provider's fetch, absent items as None (an endpoint failure raises)."""

    def fetch(item: str) -> ItemMetadata | None:
        try:
            return provider.fetch(item, None)
        except MetadataError as e:
            if not e.absent:
                raise
            return None

    return fetch


def item_lookup(source: MetadataProvider | Fetch) -> Lookup:
    """The ``item`` lookup over an OAI-PMH or Solr provider (or a :class:`MetadataCache`'s
    ``lookup``): absent means "not an item"."""
    fetch = provider_fetch(source) if hasattr(source, "fetch") else source

    def look(item: str) -> Resolution:
        return judge_item(item, fetch(item))

    return look


def main_file_lookup(source: MetadataProvider | Fetch, memo_size: int = 1024) -> Lookup:
    """The ``main-file`` lookup; ids are ``<item>|<file URL>`` (see :class:`MatchResolver`).

    An item's metadata is fetched once for all its files (a small in-process memo).
    """
    fetch = provider_fetch(source) if hasattr(source, "fetch") else source
    memo: OrderedDict[str, ItemMetadata | None] = OrderedDict()
    lock = threading.Lock()
    fetching: dict[str, threading.Lock] = {}  # one fetch per item, however many files ask

    def look(key: str) -> Resolution:
        item, _, url = key.partition("|")
        with lock:
            item_lock = fetching.setdefault(item, threading.Lock())
        with item_lock:
            with lock:
                known = item in memo
                md = memo.get(item)
            if not known:
                md = fetch(item)
                with lock:
                    memo[item] = md
                    while len(memo) > memo_size:
                        gone, _md = memo.popitem(last=False)
                        fetching.pop(gone, None)
        match = MappingMatch("", item, None, MetricType.REQUEST, url)
        return judge_main_file(match, md)

    return look


class MatchResolver:
    """Mapping matches in, matches to count out, through a :class:`Fetcher` (or none).

    A match whose rule has no ``resolve`` passes through. One whose question the configured
    provider cannot answer (no provider, or the wrong kind) passes through too, as the URL says;
    ``unresolvable`` counts those per kind so a summary can say so.
    """

    def __init__(self, fetcher: Fetcher | None) -> None:
        self.fetcher = fetcher
        self.unresolvable: dict[str, int] = {}

    @staticmethod
    def key(match: MappingMatch) -> str:
        """The lookup id of a match: the UUID or item id, ``<item>|<url>`` for main files."""
        if match.resolve is Resolve.MAIN_FILE:
            return f"{match.item}|{match.url}"
        return match.item

    def resolve_many(
        self, matches: Iterable[MappingMatch]
    ) -> list[MappingMatch | None | _Marker]:
        """For each match: the match to count, None (not usage), PENDING or UNAVAILABLE."""
        todo = list(matches)
        out: list[MappingMatch | None | _Marker] = list(todo)
        by_kind: dict[str, list[int]] = {}
        for i, m in enumerate(todo):
            if m.resolve is None:
                continue
            kind = m.resolve.value
            if self.fetcher is None or kind not in self.fetcher.lookups:
                self.unresolvable[kind] = self.unresolvable.get(kind, 0) + 1
                out[i] = replace(m, resolve=None)
                continue
            by_kind.setdefault(kind, []).append(i)
        for kind, where in by_kind.items():
            assert self.fetcher is not None
            answers = self.fetcher.resolve_many(kind, (self.key(todo[i]) for i in where))
            for i in where:
                answer = answers[self.key(todo[i])]
                out[i] = apply(todo[i], answer) if isinstance(answer, Resolution) else answer
        return out

    def resolve(self, match: MappingMatch) -> MappingMatch | None | _Marker:
        """One match; see :meth:`resolve_many`."""
        return self.resolve_many((match,))[0]


def enrich_lookup(fetch: Fetch) -> Lookup:
    """The ``enrich`` lookup: fetch (and so store) an item's metadata; the answer only says it
    is done."""

    def look(item: str) -> Resolution:
        fetch(item)
        return Resolution(True, "metadata fetched")

    return look


ENRICH = "enrich"  # the lookup kind that fetches an item's metadata for its entities


def build_fetcher(cfg: Config, r: redis.Redis, cache: Any = None) -> Fetcher | None:
    """The configured provider's lookups behind a :class:`Fetcher`; None without a provider.

    With ``cache`` (the :class:`~pirus_bridge.metadata.cache.MetadataCache` counting uses) the
    OAI-PMH and Solr lookups go through it, so an item's record is fetched once for everything
    that needs it — its entities (the ``enrich`` kind), whether it is an item, its main files —
    and kept in ``md:{item}``."""
    m = cfg.metadata
    if m.provider == "none" or m.url is None:
        return None
    timeout = (min(5.0, m.timeout_s), m.timeout_s)
    lookups: dict[str, Lookup]
    if m.provider == "dspace-rest":
        dspace = DSpaceRestProvider(m.url, cfg.repository.host, timeout=timeout, attempts=2)
        lookups = {Resolve.DSPACE_BITSTREAM.value: dspace.bitstream,
                   Resolve.DSPACE_ITEM.value: dspace.item}  # fmt: skip
    else:
        provider: MetadataProvider
        if m.provider == "oai-pmh":
            template = f"oai:{cfg.repository.host}:{{item}}"
            provider = OaiPmhProvider(m.url, metadata_prefix=m.metadata_prefix, timeout=timeout,
                                      identifier_template=template, attempts=2)  # fmt: skip
        else:
            provider = SolrProvider(m.url, id_field=m.id_field, timeout=timeout, attempts=2)
        source: MetadataProvider | Fetch = provider if cache is None else cache.lookup
        lookups = {Resolve.ITEM.value: item_lookup(source),
                   Resolve.MAIN_FILE.value: main_file_lookup(source)}  # fmt: skip
        if cache is not None:
            lookups[ENRICH] = enrich_lookup(cache.lookup)
    breaker = Breaker(m.failure_threshold, m.probe_interval_s)
    return Fetcher(r, lookups, name=m.provider, workers=m.workers, breaker=breaker)
