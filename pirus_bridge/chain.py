"""The processing chain every path shares: parse → classify → map, and the counting writes.

Bulk ingest, ``tail`` and the queue workers all go through one :class:`Stages`, so a log gives
the same statistics whichever way it arrives. :func:`build` is the one place that reads what
the stages need (the config, the mapping file, the ``botlist`` sets and the salt in Redis) and
hands values down: :class:`Chain` (the pure stages) does no I/O; :class:`Recorder` (the
counting writes) touches Redis only through the pipeline it is given.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.classify import Category, Classifier, RobotDetector
from pirus_bridge.config import Config, GathererConfig
from pirus_bridge.counter import Hasher, utc_month
from pirus_bridge.events import UsageEvent
from pirus_bridge.logparse import SKIPPED, LogFormat, LogRecord
from pirus_bridge.mapping import Mapping
from pirus_bridge.outbox import message_json, qualifies
from pirus_bridge.store import UsageStore, ensure_salt

log = logging.getLogger(__name__)


@dataclass
class UnparsedSample:
    file: str
    line: int
    text: str


@dataclass
class IngestSummary:
    """What a run saw. ``investigations``/``requests`` are the actions the run's lines added
    (a Request is not also counted in ``investigations`` here); ``double_clicks`` the lines
    that are not actions (superseded by a later click); ``replayed`` usage lines already
    counted before (they change nothing)."""

    lines: int = 0
    unparsed: int = 0
    bots: int = 0
    notfound: int = 0
    other: int = 0
    investigations: int = 0
    requests: int = 0
    double_clicks: int = 0
    replayed: int = 0
    unidentified: int = 0  # usage lines counted without an OAI identifier (not deliverable)
    enqueued: dict[str, int] = field(default_factory=dict)
    samples: list[UnparsedSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def parsed(self) -> int:
        return self.lines - self.unparsed

    def add_lines(self, counts: dict[str, int]) -> None:
        """Add a batch's lines per category (keys as in ``keys.CATEGORY_COUNTERS``)."""
        self.lines += sum(counts.values())
        self.unparsed += counts.get("unparsed", 0)
        self.bots += counts.get("bot", 0)
        self.notfound += counts.get("notfound", 0)
        self.other += counts.get("other", 0)

    def to_json(self) -> dict[str, Any]:
        """Exactly the ``ingest --json`` shape of SPEC §11."""
        return {
            "lines": self.lines,
            "parsed": self.parsed,
            "unparsed": self.unparsed,
            "bots": self.bots,
            "notfound": self.notfound,
            "other": self.other,
            "investigations": self.investigations,
            "requests": self.requests,
            "double_clicks": self.double_clicks,
            "enqueued": dict(self.enqueued),
        }


@dataclass
class Lines:
    """A run of lines through the pure stages: categories in all and per month of the lines'
    own timestamps (an unparsed line takes its neighbours' month; robots also as ``bot:<source>``
    there), where the unparsed ones are, and the usage events in line order."""

    counts: dict[str, int]
    months: dict[str, dict[str, int]]
    unparsed_at: list[int]
    events: list[UsageEvent]


_TS = operator.attrgetter("ts")
RECENT_LINES = 20_000  # usage lines remembered for telling a second copy from a replay


class Chain:
    """The pure stages: parser, classifier (with the mapping) and hasher, for one config."""

    def __init__(self, parser: LogFormat, classifier: Classifier, hasher: Hasher) -> None:
        self.parser = parser
        self.classifier = classifier
        self.hasher = hasher
        # Lines seen lately, and how often: a line written twice (two identical requests in one
        # second) is two lines, so its second copy gets an identity of its own; a line read
        # again later (a replay) gets the identity it had the first time.
        self._recent: dict[str, int] = {}

    @property
    def mapping(self) -> Mapping:
        return self.classifier.mapping

    def line(self, text: str) -> tuple[Category | None, UsageEvent | None]:
        """One log line's category (None for a blank or comment line, which is in none), and
        its usage event when it is one."""
        result = self.sort((text,), "")
        if result.events:
            return Category.USAGE, result.events[0]
        return next((Category(c) for c, n in result.counts.items() if n), None), None

    def sort(self, texts: Sequence[str], default_month: str) -> Lines:
        """Parse, classify and map a run of lines. ``default_month`` is the month of lines
        without a timestamp when none of the run has one (the caller's latest)."""
        records = list(map(self.parser.parse, texts))
        stamps = list(map(_TS, filter(None, records)))  # C loops: this runs for every line
        if stamps and not min(stamps):  # SKIPPED lines (time 0) have no month
            stamps = [t for t in stamps if t]
        if stamps and utc_month(min(stamps)) != utc_month(max(stamps)):
            runs = _month_runs(records)
        else:
            runs = [(utc_month(stamps[0]) if stamps else default_month, 0, len(records))]
        counts: dict[str, int] = {}
        months: dict[str, dict[str, int]] = {}
        unparsed_at: list[int] = []
        events: list[UsageEvent] = []
        line_id = self.line_id
        for month, start, stop in runs:
            result = self.classifier.sort(records[start:stop] if len(runs) > 1 else records)
            per = months.setdefault(month, {})
            for category, n in result.counts.items():
                counts[category] = counts.get(category, 0) + n
                per[category] = per.get(category, 0) + n
            for source, n in result.robots.items():  # robots by source, for the accounting
                per[f"bot:{source}"] = per.get(f"bot:{source}", 0) + n
            unparsed_at += [start + at for at in result.unparsed_at]
            events += [
                UsageEvent(rec.ts, m.item, m.oai_identifier, m.metric, m.url, rec.ip,
                           rec.user_agent, rec.referer, rec.status, rec.session, m.rule,
                           line_id(texts[start + at]),
                           m.resolve.value if m.resolve is not None else "")
                for (rec, m), at in zip(result.usage, result.usage_at, strict=True)
            ]  # fmt: skip
        return Lines(counts, months, unparsed_at, events)

    def line_id(self, text: str) -> str:
        """The identity of a usage line: the same for the same line read again, another for
        a second identical line in the same log (its occurrence is part of it)."""
        text = text.rstrip()
        recent = self._recent
        seen = recent.get(text)
        if seen is None:
            if len(recent) >= RECENT_LINES:
                recent.clear()
            recent[text] = 1
            return self.hasher.line_id(text)
        recent[text] = seen + 1
        return self.hasher.line_id(f"{text}\x1e{seen}")

    def forget_recent(self) -> None:
        """Start a new log: occurrences count from one again."""
        self._recent.clear()


def _month_runs(records: list[LogRecord | None]) -> list[tuple[str, int, int]]:
    """Cut a run of records where the month of their timestamps changes; unparsed lines stay
    with the run they are in (or the next one, at the start)."""
    runs: list[tuple[str, int, int]] = []
    month, start = "", 0
    for i, rec in enumerate(records):
        if rec is None or rec is SKIPPED:
            continue
        m = utc_month(rec.ts)
        if m != month:
            if month:
                runs.append((month, start, i))
                start = i
            month = m
    runs.append((month, start, len(records)))
    return runs


@dataclass
class Prepared:
    """Counting writes queued on a pipeline, and what is needed to account for their reply."""

    count_index: int | None  # where the counting script's reply is, if events were counted
    gatherers: list[str]  # the gatherers of the batch, in the script's order
    hashes: list[tuple[int, str]] = field(default_factory=list)  # day hashes: (day, key)
    unidentified: int = 0  # events without an OAI identifier: no gatherer can be sent them


class Recorder:
    """The counting writes of a run of usage events: counts, outbox messages, metadata."""

    def __init__(self, store: UsageStore, hasher: Hasher, gatherers: Sequence[GathererConfig],
                 metadata: Any = None, enricher: Any = None) -> None:
        self.store = store
        self.hasher = hasher
        self.gatherers = list(gatherers)
        self.metadata = metadata  # metadata.MetadataCache, or None
        self.enricher = enricher  # metadata.fetcher.Fetcher: fetches metadata in the background
        self._known_items: set[str] = set()
        self._waiting: set[str] = set()  # items whose metadata has not been fetched yet
        self._oai_from_metadata: dict[str, str] = {}

    def prepare(self, pipe: redis.client.Pipeline, events: Sequence[UsageEvent],
                now: float | None = None, *, hold: str | None = None) -> Prepared:
        """Queue the counting of ``events`` and their messages on ``pipe`` (see
        :meth:`UsageStore.batch` for ``hold``)."""
        now = time.time() if now is None else now
        gatherers = self.gatherers
        count = self.store.batch([g.name for g in gatherers], now, hold=hold)
        identities, url_key = self.hasher.identities, self.hasher.url_key
        add = count.add
        with_metadata = self._with_metadata
        known = self._known_items
        new_oai: list[tuple[str, str]] = []
        if self.metadata is not None:
            self._look_up({e.item for e in events if e.item not in known} | self._waiting)
        unidentified = 0
        for event in events:
            if event.item not in known or not event.oai_identifier:
                event = with_metadata(event, new_oai)
                if not event.oai_identifier:
                    unidentified += 1
            body: str | None = None
            bodies: list[str] = []
            for g in gatherers:
                if qualifies(g, event):
                    if body is None:
                        body = message_json(event, enqueued=now)
                    bodies.append(body)
                else:
                    bodies.append("")
            add(event, identities(event), url_key(event.url), bodies)
        self.store.remember_oai_identifiers(pipe, new_oai)
        count_index = len(pipe) if events else None
        if events:
            count.queue(pipe)
            pipe.sadd(keys.OBJECTITEMS, *count.items())
        return Prepared(count_index, [g.name for g in gatherers], count.hashes(), unidentified)

    @staticmethod
    def account(prepared: Prepared, replies: list[Any], s: IngestSummary) -> None:
        """Add what the counting script decided to ``s``."""
        if prepared.count_index is None:
            return
        s.unidentified += prepared.unidentified
        reply = replies[prepared.count_index]
        enqueued_by = s.enqueued
        names = prepared.gatherers
        for investigations, requests, doubles, messages, robots in zip(
            reply[0::5], reply[1::5], reply[2::5], reply[3::5], reply[4::5], strict=True
        ):
            if investigations == b"r":
                s.replayed += 1
                continue
            s.investigations += investigations
            s.requests += requests
            s.double_clicks += doubles
            s.bots += robots
            if isinstance(messages, int):  # one gatherer (or none: 0)
                if messages:
                    enqueued_by[names[0]] = enqueued_by.get(names[0], 0) + messages
                continue
            for name, n in zip(names, messages, strict=True):
                if n:
                    enqueued_by[name] = enqueued_by.get(name, 0) + n

    def _look_up(self, items: set[str]) -> None:
        """What the metadata cache knows of ``items`` (one round trip), without waiting for the
        endpoint: the others are fetched in the background, for their entities and for later
        batches (SPEC §5: a slow or dead endpoint never stalls counting)."""
        if not items:
            return
        found = self.metadata.known(items)
        for item, oai in found.items():
            if oai:
                self._oai_from_metadata[item] = oai
        missing = [item for item in items if item not in found]
        self._waiting = set(missing)
        if missing and self.enricher is not None:
            from pirus_bridge.metadata.fetcher import ENRICH

            if ENRICH in self.enricher.lookups:
                self.enricher.resolve_many(ENRICH, missing)

    def _with_metadata(self, event: UsageEvent, new_oai: list[tuple[str, str]]) -> UsageEvent:
        """Fill the OAI identifier from metadata when the mapping cannot give it; the first time
        an item is seen, add its identifier to ``new_oai`` to be remembered."""
        item = event.item
        if item not in self._known_items:
            self._known_items.add(item)
            oai = event.oai_identifier or self._oai_from_metadata.get(item)
            if oai:
                new_oai.append((item, oai))
        if not event.oai_identifier and item in self._oai_from_metadata:
            return replace(event, oai_identifier=self._oai_from_metadata[item])
        return event


@dataclass
class Stages:
    """Everything one config's counting needs: the pure chain, the counting writes, and the
    metadata provider's answers for events that wait for them (:mod:`pirus_bridge.parking`)."""

    cfg: Config
    chain: Chain
    recorder: Recorder
    resolver: Any = None  # parking.Resolver when a provider answers resolve: rules

    def settle(self, pipe: redis.client.Pipeline, events: list[UsageEvent],
               counts: dict[str, dict[str, int]], taken: Any = None,
               wait_s: float = 0.0) -> list[UsageEvent]:
        """The events to count now: those that need no answer, those whose answer is known,
        and parked ones whose answer has arrived (and ``taken``, parked ones the caller took;
        with ``wait_s`` the lookups under way are waited for first, at the end of a run).
        The others are parked (on ``pipe``), or dropped when they are not usage; in ``counts``
        (lines per month and category, for :meth:`add_accounting`) they move from *usage* to
        *other*, and parked ones counted now back."""
        if self.resolver is None:
            return events
        outcome = self.resolver.sort(events)
        if wait_s and outcome.park:
            self.resolver.fetcher.wait(wait_s)
            again = self.resolver.sort([e for _, _, e in outcome.park])
            outcome.count += again.count
            outcome.dropped += again.dropped
            outcome.park = again.park
        ready = self.resolver.take_ready()
        if taken is not None:
            ready.events += taken.events
            ready.lists += taken.lists
        taken = ready
        again = self.resolver.sort(taken.events)
        self.resolver.park(pipe, outcome.park + again.park)
        self.resolver.forget(pipe, taken)
        shifts = [(e, 1) for _, _, e in outcome.park] + [(e, 1) for e in outcome.dropped]
        shifts += [(e, -1) for e in again.count]  # parked as other before, usage now
        for e, n in shifts:
            per = counts.setdefault(utc_month(e.ts), {})
            per["other"] = per.get("other", 0) + n
            per["usage"] = per.get("usage", 0) - n
        return outcome.count + again.count

    @property
    def gatherers(self) -> list[GathererConfig]:
        return self.recorder.gatherers

    @property
    def store(self) -> UsageStore:
        return self.recorder.store

    def add_accounting(self, pipe: redis.client.Pipeline, months: dict[str, dict[str, int]],
                       *, seed_counters: bool = True) -> None:
        """Queue the month's accounting of non-usage lines (``acct:<YYYY-MM>``) and, with
        ``seed_counters``, the seed's ``u:<category>`` counters."""
        totals: dict[str, int] = {}
        for month, counts in months.items():
            for c, n in counts.items():
                if c in keys.CATEGORY_COUNTERS:
                    totals[c] = totals.get(c, 0) + n
                # usage lines are in c:{item}; robots only by source
                if n and c not in ("usage", "bot"):
                    pipe.hincrby(keys.accounting(month), c, n)
        if seed_counters:
            self.store.add_category_counts(pipe, totals)


def build(cfg: Config, r: redis.Redis, *, send: bool = True,
          mapping: Mapping | None = None) -> Stages:
    """The composition root: read the mapping, the ``botlist`` sets and the salt once, and
    build the stages from values."""
    repo = cfg.repository
    mapping = mapping or Mapping.load(repo.mapping, host=repo.host, base_url=repo.base_url)
    store = UsageStore(r, cfg.counting, volume_per_day=cfg.bots.volume_per_day)
    robots = RobotDetector(cfg.bots, extra_ips=store.bot_ips())
    parser = LogFormat.compile(
        cfg.log.format, session=cfg.log.session, max_line_bytes=cfg.log.max_line_bytes,
        client=cfg.log.client, trusted_proxies=cfg.log.trusted_proxies,
    )  # fmt: skip
    classifier = Classifier(robots, mapping, cfg.counting,
                            user_agent_logged=parser.logs_user_agent)
    hasher = Hasher(ensure_salt(r, cfg.counting.salt))
    gatherers = [g for g in cfg.gatherers.values() if g.enabled] if send else []
    metadata = metadata_cache(cfg, r)
    fetcher = None
    if cfg.metadata.provider != "none":
        from pirus_bridge.metadata.fetcher import build_fetcher

        fetcher = build_fetcher(cfg, r, metadata)
    recorder = Recorder(store, hasher, gatherers, metadata, fetcher)
    resolver = None
    if fetcher is not None and any(rule.resolve is not None for rule in mapping.rules):
        from pirus_bridge.parking import Resolver  # resolve: rules need the provider's answers

        resolver = Resolver(r, fetcher, keep_s=cfg.counting.day_close_grace_h * 3600 + 86400)
    return Stages(cfg, Chain(parser, classifier, hasher), recorder, resolver)


def metadata_cache(cfg: Config, r: redis.Redis) -> Any:
    """The configured metadata provider behind its Redis cache, or None."""
    m = cfg.metadata
    if m.provider in ("none", "dspace-rest"):  # dspace-rest resolves ids (metadata.fetcher)
        return None
    from pirus_bridge.metadata import MetadataCache, OaiPmhProvider, SolrProvider

    provider: Any
    assert m.url is not None  # the config requires it with a provider
    timeout = (min(5.0, m.timeout_s), m.timeout_s)
    if m.provider == "oai-pmh":
        provider = OaiPmhProvider(m.url, metadata_prefix=m.metadata_prefix, timeout=timeout,
                                  identifier_template=f"oai:{cfg.repository.host}:{{item}}")
    else:
        provider = SolrProvider(m.url, id_field=m.id_field, timeout=timeout)
    return MetadataCache(r, provider, scoped_entities=m.scoped_entities)
