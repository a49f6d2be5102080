"""Bulk ingest: the whole chain in one process, with pipelined, transactional Redis writes.

read → parse → classify → map → count (+ enqueue) → commit

Every ``counting.batch_size`` lines one MULTI/EXEC transaction writes the counts of the batch's
usage lines, the month's line accounting, the source's freshness and its checkpoint (byte offset,
line number; :mod:`pirus_bridge.checkpoint`). A run killed at any point resumes at the last
checkpoint, and every usage line carries its identity into the counting script, so a line read
twice — a re-run, a grown or renamed file, a compressed copy, standard input piped again, two
runs at once — is counted once.

Counting is order-independent (``lua/count.lua``: a later click supersedes an action counted
before it), so there is nothing to hold back for the counts. What cannot be taken back is a
delivery: a bulk run's messages are held (``ob:{g}:held:<run>``) until its own lines have moved
past them by ``counting.double_click_s + counting.reorder_window_s`` of event time, then made
due; the end of the run releases the rest. Days closed by the wall clock (a backfill) are
closed again by the log's clock: once the run has passed a day's end by
``counting.day_close_grace_h``, the day's dedupe hashes are let go (:class:`DayCloser`).

Lines come in blocks (:class:`~pirus_bridge.sources.Block`, a read chunk's worth); each block
is cut at batch boundaries and each piece goes through :meth:`Chain.sort` in one call, so the
per-line work is the parser and the classifier's inner loop and nothing else. Transactions are
committed in order by a writer thread, so Redis works on one batch while the main thread parses
the next; an error in the writer is raised in the main thread.

The same loop serves ``tail``: its source is a :class:`~pirus_bridge.tail.Follower`, which
yields one-line blocks, and ``None`` when the file is idle; the loop then commits what it has.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from pirus_bridge import keys
from pirus_bridge.chain import IngestSummary, Prepared, Recorder, Stages, UnparsedSample, build
from pirus_bridge.checkpoint import TAIL_LINES, FileCheckpoint
from pirus_bridge.config import Config
from pirus_bridge.counter import DAY, utc_month
from pirus_bridge.events import UsageEvent
from pirus_bridge.freshness import record_read
from pirus_bridge.mapping import Mapping
from pirus_bridge.sources import Block, open_log

__all__ = ["Ingester", "IngestSummary", "UnparsedSample", "DayCloser"]

log = logging.getLogger(__name__)

MAX_SAMPLES = 5
CLOSED_KEEP_S = 300  # a day closed by the log's clock keeps its dedupe hashes this long
# While the bulk loop runs (see _tuned_interpreter):
# - the GIL switch interval: the writer thread needs the GIL for a moment each time Redis
#   answers; by default it waits up to 5 ms for the busy main thread to let go, several times
#   per batch, and Redis idles meanwhile. A short interval keeps Redis busy.
# - the cyclic collector's young-generation threshold: the loop allocates records, events and
#   cache entries by the million, and many live for a batch or longer; with the default (700)
#   the collector ran ~900 times per million lines and took ~13% of the run. The loop makes no
#   reference cycles of its own.
SWITCH_INTERVAL_S = 0.0005
GC_YOUNG_THRESHOLD = 20_000
Progress = Callable[[int, int | None], None]  # (bytes read, total bytes or None)
Blocks = Iterable[Block | None]  # runs of lines, or None when the source is idle


class Checkpoint(Protocol):
    """Where a source's progress is saved, in the same transaction as its effects."""

    def write(self, pipe: redis.client.Pipeline, offset: int, line: int,
              last_texts: Sequence[str]) -> None:
        """Queue the save of the position after ``line`` (``last_texts``: the lines before)."""


class DayCloser:
    """Closes backfilled days by the log's own clock.

    A day whose end is more than the grace period in the past (by the wall clock) is closed as
    soon as it is written; its dedupe hashes get the grace period from now, so a backfill can
    finish the day. This run closes them sooner: once its lines have passed the day's end by the
    grace period (a log is nearly in time order, and lines that late are not expected), the
    hashes it wrote for that day expire within minutes. Dedupe state is then bounded by the days
    a run has open, not by how much history it reads.
    """

    def __init__(self, grace_s: int, now: float | None = None) -> None:
        self.grace_s = grace_s
        self.now = time.time() if now is None else now
        self._open: dict[int, set[str]] = {}

    def note(self, hashes: Iterable[tuple[int, str]]) -> None:
        """Remember the day hashes a batch wrote (``(day number, key)``)."""
        closed_before = self.now - self.grace_s
        for day, key in hashes:
            if (day + 1) * DAY <= closed_before:
                self._open.setdefault(day, set()).add(key)

    def close(self, pipe: redis.client.Pipeline, watermark: int) -> int:
        """Queue the expiry of the hashes of days the log has passed; return how many."""
        n = 0
        for day in [d for d in self._open if (d + 1) * DAY + self.grace_s <= watermark]:
            for key in self._open.pop(day):
                pipe.expire(key, CLOSED_KEEP_S)
                n += 1
        return n


class Ingester:
    """Runs log lines through the whole chain into Redis."""

    def __init__(
        self,
        cfg: Config,
        r: redis.Redis,
        *,
        send: bool = True,
        mapping: Mapping | None = None,
        stages: Stages | None = None,
    ) -> None:
        self.cfg = cfg
        self.r = r
        self.stages = stages or build(cfg, r, send=send, mapping=mapping)
        self.gatherers = self.stages.gatherers
        self._resolver_notes: list[str] = []

    def ingest(
        self, path: str, summary: IngestSummary | None = None, progress: Progress | None = None
    ) -> IngestSummary:
        """Ingest one file (``-`` for stdin), resuming at its checkpoint; add to ``summary``."""
        s = summary if summary is not None else IngestSummary()
        started = time.perf_counter()
        self.stages.chain.forget_recent()
        src = open_log(path, max_line_bytes=self.cfg.log.max_line_bytes)
        checkpoint: FileCheckpoint | None = None
        try:
            head = src.head()
            if head is None:
                s.notes.append(f"{path}: standard input has no checkpoint; lines counted "
                               "before are recognised and not counted again")
            elif head:
                checkpoint = FileCheckpoint(path, head)
                checkpoint.acquire(self.r, waiting=lambda who: log.warning(
                    "%s: another ingest (%s) is reading this log; waiting for it", path, who))
                entry = checkpoint.find(self.r)
                if entry is not None:
                    src.skip_to(entry.offset, entry.line)
                    if entry.offset:
                        s.notes.append(f"{path}: already ingested up to line {entry.line}"
                                       f"{' (as ' + entry.file + ')' if entry.file != path else ''}"
                                       "; resuming")

            def report() -> None:
                if progress is not None:
                    progress(src.position(), src.size_hint)

            self.run(src.blocks(), checkpoint, s, name=path, on_batch=report, hold=True)
            report()
        finally:
            if checkpoint is not None:
                checkpoint.release(self.r)
                checkpoint.prune(self.r)
            src.close()
        enricher = self.stages.recorder.enricher
        if enricher is not None:  # the run is done: give the lookups under way their time
            enricher.wait(self.cfg.metadata.wait_s)
        s.seconds += time.perf_counter() - started
        resolver = self.stages.resolver
        if resolver is not None:  # the latest word on the provider replaces the one before
            s.notes = [n for n in s.notes if n not in self._resolver_notes]
            self._resolver_notes = list(resolver.fetcher.summary())
            waiting = resolver.waiting()
            if waiting:
                self._resolver_notes.append(
                    f"usage lines of {waiting:,} URL(s) wait for the "
                    f"{self.cfg.metadata.provider} metadata provider's answer; they are counted "
                    "when it answers (serve asks again)")
            s.notes += self._resolver_notes
        return s

    def settle_parked(self) -> IngestSummary:
        """Count the parked events whose answers the provider now gives (``serve`` runs this in
        its maintenance): ask again for every parked id, wait up to ``metadata.wait_s``, count
        what was answered."""
        s = IngestSummary()
        resolver = self.stages.resolver
        if resolver is None or not resolver.waiting():
            return s
        taken = resolver.take_answered()
        resolver.fetcher.wait(self.cfg.metadata.wait_s)
        with _tuned_interpreter():
            run = _Run(self, None, s, "parked", None, False, "parked")
            run.taken = taken
            run.loop([])
        return s

    def close(self) -> None:
        """Stop the background lookups (those not started are asked again next time)."""
        if self.stages.recorder.enricher is not None:
            self.stages.recorder.enricher.close()

    def run(
        self,
        blocks: Blocks,
        checkpoint: Checkpoint | None,
        s: IngestSummary,
        *,
        name: str,
        on_batch: Callable[[], None] | None = None,
        hold: bool = False,
        kind: str = "ingest",
    ) -> None:
        """The bulk loop: count the lines of ``blocks`` into Redis, committing every batch
        (and whenever the source is idle) together with ``checkpoint``. With ``hold``, the
        run's messages wait until the run has moved past them (see the module docstring)."""
        with _tuned_interpreter():
            _Run(self, checkpoint, s, name, on_batch, hold, kind).loop(blocks)


class _Run:
    """One pass of the bulk loop over a source: its batch in hand and its clocks."""

    def __init__(self, ingester: Ingester, checkpoint: Checkpoint | None, s: IngestSummary,
                 name: str, on_batch: Callable[[], None] | None, hold: bool, kind: str) -> None:
        self.ingester = ingester
        self.r = ingester.r
        self.stages = ingester.stages
        self.counting = ingester.cfg.counting
        self.checkpoint = checkpoint
        self.s = s
        self.name = name
        self.kind = kind
        self.on_batch = on_batch
        self.run_id = secrets.token_hex(6) if hold and self.stages.gatherers else None
        self.hold_s = self.counting.double_click_s + self.counting.reorder_window_s
        self.closer = DayCloser(self.counting.day_close_grace_h * 3600)
        self.month = utc_month(int(time.time()))
        self.watermark = 0  # the newest event time committed
        self.events: list[UsageEvent] = []
        self.months: dict[str, dict[str, int]] = {}
        self.recent: list[str] = []  # the last lines read (for the checkpoint's tail digest)
        self.n = 0  # lines since the last commit
        self.offset = self.lineno = 0
        self.writer = _Writer(s)
        self.taken: Any = None  # parked events taken by the caller, for the first commit

    def loop(self, blocks: Blocks) -> None:
        for g in self.stages.gatherers:
            self.s.enqueued.setdefault(g.name, 0)
        sort = self.stages.chain.sort
        batch_size = self.counting.batch_size
        s = self.s
        try:
            for block in blocks:
                if block is None:  # the source is idle: commit what there is
                    if self.n:
                        self.commit()
                    continue
                texts = block.texts
                start, total = 0, len(texts)
                self.offset = block.offset
                while start < total:  # the block's lines, cut at batch boundaries
                    stop = min(total, start + batch_size - self.n)
                    piece = texts[start:stop] if start or stop < total else texts
                    result = sort(piece, self.month)
                    for month, counts in result.months.items():
                        into = self.months.setdefault(month, {})
                        for category, k in counts.items():
                            into[category] = into.get(category, 0) + k
                        self.month = month
                    self.events += result.events
                    for at in result.unparsed_at:
                        if len(s.samples) < MAX_SAMPLES:
                            s.samples.append(UnparsedSample(
                                self.name, block.lineno + start + at + 1, _excerpt(piece[at])))
                    self.recent = (self.recent + texts[max(start, stop - TAIL_LINES):stop]
                                   )[-TAIL_LINES:]
                    self.n += stop - start
                    self.lineno = block.lineno + stop
                    self.offset += block.span(start, stop)
                    start = stop
                    if self.n == batch_size:
                        self.commit()
            self.commit(final=True)
        except BaseException:
            self.writer.abandon()
            raise
        self.writer.close()

    def commit(self, final: bool = False) -> None:
        """One transaction: the batch's counts, accounting, freshness, checkpoint."""
        events, months, n = self.events, self.months, self.n
        self.events, self.months, self.n = [], {}, 0
        if not n and not final:
            return
        pipe = self.r.pipeline(transaction=True)
        recorder: Recorder = self.stages.recorder
        wait_s = self.ingester.cfg.metadata.wait_s if final else 0.0
        events = self.stages.settle(pipe, events, months, self.taken, wait_s)
        self.taken = None
        prepared = recorder.prepare(pipe, events, hold=self.run_id)
        self.closer.note(prepared.hashes)
        self.stages.add_accounting(pipe, months)
        if events:
            self.watermark = max(self.watermark, max(e.ts for e in events))
        gatherers = [g.name for g in self.stages.gatherers]
        if self.run_id is not None:
            bound = float("inf") if final else self.watermark - self.hold_s
            if self.stages.cfg.bots.volume_per_day and not final:
                bound -= bound % DAY  # the volume rule decides a user's day once it is over
            self.stages.store.release_held(pipe, gatherers, self.run_id, bound)
        self.closer.close(pipe, self.watermark)
        if n:
            self._freshness(pipe, n, events)
        if self.checkpoint is not None and (n or final) and self.lineno:
            self.checkpoint.write(pipe, self.offset, self.lineno, self.recent)
        counts: dict[str, int] = {}
        for per in months.values():
            for category, k in per.items():
                if category in keys.CATEGORY_COUNTERS:  # not the robots' bot:<source> split
                    counts[category] = counts.get(category, 0) + k
        self.writer.submit(_Batch(pipe, prepared, counts))
        if self.on_batch is not None:
            self.on_batch()

    def _freshness(self, pipe: redis.client.Pipeline, n: int, events: list[UsageEvent]) -> None:
        record_read(pipe, self.name, self.kind, lines=n,
                    event_ts=max(e.ts for e in events) if events else None, now=time.time())


_tuning_lock = threading.Lock()
_tuning_runs = 0
_tuning_saved: tuple[float, tuple[int, ...]] = (0.005, (700, 10, 10))


@contextlib.contextmanager
def _tuned_interpreter() -> Iterator[None]:
    """Set the switch interval and collector threshold above for the bulk loop, and put them
    back after. Runs can overlap (``serve`` follows several files, each in a thread): the first
    run in sets them, the last one out restores them."""
    global _tuning_runs, _tuning_saved
    with _tuning_lock:
        if _tuning_runs == 0:
            switch, threshold = sys.getswitchinterval(), gc.get_threshold()
            _tuning_saved = (switch, threshold)
            sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
            gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])
        _tuning_runs += 1
    try:
        yield
    finally:
        with _tuning_lock:
            _tuning_runs -= 1
            if _tuning_runs == 0:
                sys.setswitchinterval(_tuning_saved[0])
                gc.set_threshold(*_tuning_saved[1])


@dataclass
class _Batch:
    """One prepared transaction and what is needed to account for its reply."""

    pipe: redis.client.Pipeline
    prepared: Prepared
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
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """The main thread failed: commit what is already submitted, then stop (no raise)."""
        try:
            self._put(None)
        except BaseException:  # the writer failed too; the main thread's error wins
            return
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
        Recorder.account(batch.prepared, replies, self.summary)
        self.summary.add_lines(batch.counts)


def _excerpt(text: str, limit: int = 120) -> str:
    clean = text.replace("\x00", "\\0")
    return clean if len(clean) <= limit else clean[:limit] + "…"
