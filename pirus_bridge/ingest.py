"""Bulk ingest: the whole chain in one process, with pipelined, transactional Redis writes.

read → parse → classify → map → reorder → count (+ enqueue) → commit

Every ``counting.batch_size`` lines one MULTI/EXEC transaction writes the counts of the events
released so far, the ``u:<category>`` counters, and the file's checkpoint (byte offset, line
number and the events still held by the reorder buffer). A run killed at any point resumes at
the last checkpoint, so a file ingested twice, or resumed after SIGKILL, is counted once.

The events of a batch are counted by one call of the counting script (``UsageStore.batch``).
Transactions are committed in order by a writer thread, so Redis works on one batch while the
main thread parses the next; an error in the writer is raised in the main thread.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.classify import Category, Classifier, RobotDetector
from pirus_bridge.config import Config
from pirus_bridge.counter import Hasher, ReorderBuffer, event_from_json, event_to_json
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.logparse import LogFormat
from pirus_bridge.mapping import Mapping
from pirus_bridge.outbox import message_id, message_json, qualifies
from pirus_bridge.sources import open_log
from pirus_bridge.store import UsageStore, ensure_salt

log = logging.getLogger(__name__)

MAX_SAMPLES = 5
SWITCH_INTERVAL_S = 0.0005  # GIL switch interval while a writer thread runs (see _Writer)
Progress = Callable[[int, int | None], None]  # (bytes read, total bytes or None)


@dataclass
class UnparsedSample:
    file: str
    line: int
    text: str


@dataclass
class IngestSummary:
    """What a run saw. ``investigations``/``requests`` are events counted after filtering (a
    Request is not also counted in ``investigations`` here); ``double_clicks`` were dropped."""

    lines: int = 0
    unparsed: int = 0
    bots: int = 0
    notfound: int = 0
    other: int = 0
    investigations: int = 0
    requests: int = 0
    double_clicks: int = 0
    enqueued: dict[str, int] = field(default_factory=dict)
    samples: list[UnparsedSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def parsed(self) -> int:
        return self.lines - self.unparsed

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


class Ingester:
    """Runs log files through the whole chain into Redis."""

    def __init__(
        self,
        cfg: Config,
        r: redis.Redis,
        *,
        send: bool = True,
        mapping: Mapping | None = None,
    ) -> None:
        self.cfg = cfg
        self.r = r
        self.mapping = mapping or Mapping.load(
            cfg.repository.mapping, host=cfg.repository.host, base_url=cfg.repository.base_url
        )
        self.store = UsageStore(r, cfg.counting)
        robots = RobotDetector(cfg.bots, extra_ips=self.store.bot_ips())
        self.classifier = Classifier(robots, self.mapping, cfg.counting)
        self.parser = LogFormat.compile(
            cfg.log.format, session=cfg.log.session, max_line_bytes=cfg.log.max_line_bytes
        )
        self.hasher = Hasher(ensure_salt(r, cfg.counting.salt))
        self.gatherers = [g for g in cfg.gatherers.values() if g.enabled] if send else []
        self.metadata = _metadata_cache(cfg, r)
        self._known_items: set[str] = set()
        self._oai_from_metadata: dict[str, str] = {}

    # -- one file ------------------------------------------------------------------------------

    def ingest(
        self, path: str, summary: IngestSummary | None = None, progress: Progress | None = None
    ) -> IngestSummary:
        """Ingest one file (``-`` for stdin), resuming at its checkpoint; add to ``summary``."""
        s = summary if summary is not None else IngestSummary()
        for g in self.gatherers:
            s.enqueued.setdefault(g.name, 0)
        started = time.perf_counter()
        src = open_log(path)
        try:
            self._run(src, path, s, progress)
        finally:
            src.close()
        s.seconds += time.perf_counter() - started
        return s

    def _run(self, src: Any, path: str, s: IngestSummary, progress: Progress | None) -> None:
        fingerprint = src.fingerprint()
        ck_key = keys.ingest_checkpoint(fingerprint) if fingerprint else None
        buffer = ReorderBuffer(self.cfg.counting.reorder_window_s)
        if ck_key is None:
            s.notes.append(f"{path}: standard input cannot be resumed or recognised if re-read")
        else:
            ck = self.r.hgetall(ck_key)
            if ck:
                offset, lineno = int(ck[b"offset"]), int(ck[b"line"])
                for d in json.loads(ck.get(b"held", b"[]")):
                    buffer.push(event_from_json(d))
                src.skip_to(offset, lineno)
                if offset:
                    s.notes.append(f"{path}: already ingested up to line {lineno}; resuming")

        parse = self.parser.parse
        classify = self.classifier.classify
        batch_size = self.cfg.counting.batch_size
        usage, bot, notfound = Category.USAGE, Category.BOT, Category.NOTFOUND
        other, unparsed = Category.OTHER, Category.UNPARSED
        n_bot = n_usage = n_notfound = n_other = n_unparsed = 0
        released: list[UsageEvent] = []
        push = buffer.push
        n = 0
        offset = lineno = 0
        writer = _Writer(s)
        try:
            for lineno, offset, text in src:
                rec = parse(text)
                cat, match = classify(rec)
                if cat is bot:
                    n_bot += 1
                elif cat is usage:
                    assert rec is not None and match is not None
                    n_usage += 1
                    held = push(
                        UsageEvent(
                            rec.ts, match.item, match.oai_identifier, match.metric, match.url,
                            rec.ip, rec.user_agent, rec.referer, rec.status, rec.session,
                            match.rule,
                        )
                    )
                    if held:
                        released += held
                elif cat is notfound:
                    n_notfound += 1
                elif cat is other:
                    n_other += 1
                elif cat is unparsed:
                    n_unparsed += 1
                    if len(s.samples) < MAX_SAMPLES:
                        s.samples.append(UnparsedSample(path, lineno, _excerpt(text)))
                n += 1
                if n == batch_size:
                    counts = {"bot": n_bot, "usage": n_usage, "notfound": n_notfound,
                              "other": n_other, "unparsed": n_unparsed}  # fmt: skip
                    writer.submit(
                        self._prepare(released, counts, ck_key, offset, lineno, buffer, path)
                    )
                    released, n = [], 0
                    n_bot = n_usage = n_notfound = n_other = n_unparsed = 0
                    if progress is not None:
                        progress(src.position(), src.size_hint)
            released += buffer.drain()
            counts = {"bot": n_bot, "usage": n_usage, "notfound": n_notfound,
                      "other": n_other, "unparsed": n_unparsed}  # fmt: skip
            writer.submit(
                self._prepare(released, counts, ck_key, offset, lineno, buffer, path)
            )
        except BaseException:
            writer.abandon()
            raise
        writer.close()
        if progress is not None:
            progress(src.position(), src.size_hint)

    def _prepare(
        self,
        events: list[UsageEvent],
        counts: dict[str, int],
        ck_key: str | None,
        offset: int,
        lineno: int,
        buffer: ReorderBuffer,
        path: str,
    ) -> _Batch | None:
        """One transaction: the events' counts and messages, the counters, the checkpoint."""
        if ck_key is not None and not events and not any(counts.values()) and not lineno:
            return None
        now = time.time()
        pipe = self.r.pipeline(transaction=True)
        gatherers = self.gatherers
        count = self.store.batch([g.name for g in gatherers], now)
        identities = self.hasher.identities
        add = count.add
        with_metadata = self._with_metadata
        request = MetricType.REQUEST
        outcomes: list[tuple[bool, tuple[str, ...]]] = []  # (is a Request, gatherers)
        nobody: tuple[str, ...] = ()
        if len(gatherers) == 1:  # the usual case, without the lists
            g = gatherers[0]
            name, only = g.name, (g.name,)
            for event in events:
                event = with_metadata(event, pipe)
                ids = identities(event)
                if qualifies(g, event):
                    add(event, ids, ((message_id(name, event, ids), message_json(event)),))
                    outcomes.append((event.metric is request, only))
                else:
                    add(event, ids, (None,))
                    outcomes.append((event.metric is request, nobody))
        else:
            for event in events:
                event = with_metadata(event, pipe)
                ids = identities(event)
                body: str | None = None
                messages: list[tuple[str, str] | None] = []
                names: list[str] = []
                for g in gatherers:
                    if qualifies(g, event):
                        if body is None:
                            body = message_json(event)
                        messages.append((message_id(g.name, event, ids), body))
                        names.append(g.name)
                    else:
                        messages.append(None)
                add(event, ids, messages)
                outcomes.append((event.metric is request, tuple(names) if names else nobody))
        count_index = len(pipe) if events else None
        count.queue(pipe)
        self.store.add_category_counts(pipe, counts)
        if ck_key is not None:
            pipe.hset(
                ck_key,
                mapping={
                    "offset": offset,
                    "line": lineno,
                    "held": json.dumps([event_to_json(e) for e in buffer.held()]),
                    "file": path,
                    "updated": int(now),
                },
            )
        return _Batch(pipe, count_index, outcomes, counts)

    def _with_metadata(self, event: UsageEvent, pipe: redis.client.Pipeline) -> UsageEvent:
        """Fill the OAI identifier from metadata when the mapping cannot give it; remember it."""
        item = event.item
        if item not in self._known_items:
            self._known_items.add(item)
            md = self.metadata.get(item, event.oai_identifier) if self.metadata else None
            if md is not None and md.oai_identifier and not event.oai_identifier:
                self._oai_from_metadata[item] = md.oai_identifier
            oai = event.oai_identifier or self._oai_from_metadata.get(item)
            if oai:
                self.store.remember_oai_identifier(pipe, item, oai)
        if not event.oai_identifier and item in self._oai_from_metadata:
            return replace(event, oai_identifier=self._oai_from_metadata[item])
        return event

    def ingest_all(
        self, paths: Iterable[str], progress: Progress | None = None
    ) -> IngestSummary:
        summary = IngestSummary()
        for path in paths:
            self.ingest(path, summary, progress)
        return summary


@dataclass
class _Batch:
    """One prepared transaction and what is needed to account for its reply."""

    pipe: redis.client.Pipeline
    count_index: int | None  # where the counting script's reply is, if events were counted
    outcomes: list[tuple[bool, tuple[str, ...]]]  # per event: is a Request, its gatherers
    counts: dict[str, int]  # lines per category


class _Writer:
    """Commits prepared batches, in order, on a thread of its own.

    While Redis runs one transaction (and the thread waits for it with the GIL released), the
    main thread parses and prepares the next batch. At most ``depth`` batches wait; an error in
    the writer is raised again in the main thread by the next :meth:`submit` or by
    :meth:`close`, and nothing after the failed batch is committed, so the checkpoint still
    covers exactly the committed lines.
    """

    def __init__(self, summary: IngestSummary, depth: int = 2) -> None:
        self.summary = summary
        self.error: BaseException | None = None
        self._queue: queue.Queue[_Batch | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._loop, name="ingest-writer", daemon=True)
        # The writer needs the GIL for a moment each time Redis answers; by default it waits up
        # to 5 ms for the busy main thread to let go, several times per batch, and then Redis
        # idles. A short switch interval keeps Redis busy; it is restored when the run ends.
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, SWITCH_INTERVAL_S))
        self._thread.start()

    def submit(self, batch: _Batch | None) -> None:
        """Queue a batch for commit (``None``: nothing to commit); blocks while the queue is
        full."""
        if batch is not None:
            self._put(batch)

    def close(self) -> None:
        """Wait until every submitted batch is committed; raise the writer's error if any."""
        self._put(None)
        self._thread.join()
        sys.setswitchinterval(self._switch)
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """The main thread failed: commit what is already submitted, then stop (no raise)."""
        try:
            self._put(None)
        except BaseException:  # the writer failed too; the main thread's error wins
            return
        finally:
            sys.setswitchinterval(self._switch)
        self._thread.join()
        if self.error is not None:
            log.error("ingest writer failed while stopping: %s", self.error)

    def _put(self, item: _Batch | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                self._commit(batch)
            except BaseException as e:
                self.error = e
                return

    def _commit(self, batch: _Batch) -> None:
        replies = batch.pipe.execute()
        s = self.summary
        if batch.count_index is not None:
            reply = replies[batch.count_index]
            enqueued_by = s.enqueued
            for (is_request, names), counted, enqueued in zip(
                batch.outcomes, reply[0::2], reply[1::2], strict=True
            ):
                if not counted:
                    s.double_clicks += 1
                elif is_request:
                    s.requests += 1
                else:
                    s.investigations += 1
                if enqueued:
                    for name in names:
                        enqueued_by[name] = enqueued_by.get(name, 0) + 1
        counts = batch.counts
        s.lines += sum(counts.values())
        s.unparsed += counts["unparsed"]
        s.bots += counts["bot"]
        s.notfound += counts["notfound"]
        s.other += counts["other"]


def _excerpt(text: str, limit: int = 120) -> str:
    clean = text.replace("\x00", "\\0")
    return clean if len(clean) <= limit else clean[:limit] + "…"


def _metadata_cache(cfg: Config, r: redis.Redis) -> Any:
    if cfg.metadata.provider == "none":
        return None
    from pirus_bridge.metadata import MetadataCache, OaiPmhProvider, SolrProvider

    provider: Any
    assert cfg.metadata.url is not None  # the config requires it with a provider
    if cfg.metadata.provider == "oai-pmh":
        provider = OaiPmhProvider(cfg.metadata.url, metadata_prefix=cfg.metadata.metadata_prefix)
    else:
        provider = SolrProvider(cfg.metadata.url, id_field=cfg.metadata.id_field)
    return MetadataCache(r, provider)
