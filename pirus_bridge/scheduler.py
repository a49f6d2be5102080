"""The long-running service: scheduled pushes, maintenance, tails and queue workers.

Each enabled gatherer is pushed on its own ``interval_s`` or ``cron`` schedule; one job never
overlaps itself (``max_instances=1``, missed runs coalesce). Maintenance runs every few minutes:
it returns expired leases to pending (so ``outbox stats`` tells the truth while no pusher runs),
forgets delivered ids older than the audit period, blanks the raw identity of old failed
messages and, after deliveries, has the append-only file rewritten (``retention``). The files
of ``live.tail`` are followed, and with ``live.queue_workers`` the classifier, counter and
logger run too, each in a thread.
On SIGTERM or SIGINT every component finishes the batch in hand, commits or settles it, and the
process exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pirus_bridge.chain import IngestSummary
from pirus_bridge.config import Config, GathererConfig
from pirus_bridge.outbox import Outbox
from pirus_bridge.pusher import Pusher
from pirus_bridge.redact import scrub
from pirus_bridge.redisconn import AVAILABILITY, REDIS_ERRORS, wait_for
from pirus_bridge.retention import AofRewriter, delivered_total, forget_failed_identities

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_S = 300


def trigger_for(g: GathererConfig) -> CronTrigger | IntervalTrigger:
    """The gatherer's schedule: its crontab expression if it has one, else its interval."""
    if g.cron:
        return CronTrigger.from_crontab(g.cron, timezone="UTC")
    return IntervalTrigger(seconds=g.interval_s, timezone="UTC")


class Service:
    """Scheduled pushes and maintenance in one process (``pirus-bridge serve``)."""

    def __init__(self, cfg: Config, r: redis.Redis,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.r = r
        self.clock = clock
        self.aof = AofRewriter(cfg.retention.aof_rewrite_interval_s, clock)
        self.pushers = [Pusher(cfg, r, g) for g in cfg.gatherers.values() if g.enabled]
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        self.tails = list(cfg.live.tail)
        self.followers: dict[Any, Any] = {}  # path -> its current Follower
        self.workers: list[Any] = []
        if cfg.live.queue_workers:
            from pirus_bridge.workers import make_worker

            self.workers = [make_worker(role, cfg, r)
                            for role in ("classifier", "counter", "logger")]
        self.http: Any = None
        self.parked: Any = None  # the Ingester that counts parked events (maintenance)
        if cfg.http.listen:
            from pirus_bridge.web import WebContext, create_app
            from pirus_bridge.web.server import HttpServer

            self.http = HttpServer(create_app(WebContext(cfg, r, self.components)), cfg.http)

    def components(self) -> dict[str, bool]:
        """Whether each long-running part is alive (for ``/readyz``)."""
        alive = {f"thread:{t.name}": t.is_alive() for t in self.threads}
        alive["scheduler"] = bool(self.scheduler.running)
        return alive

    def describe(self) -> str:
        parts = [f"{len(self.pushers)} gatherer(s)"]
        if self.http is not None:
            parts.append(f"HTTP on {self.cfg.http.listen}")
        if self.tails:
            parts.append("tailing " + ", ".join(str(p) for p in self.tails))
        if self.workers:
            parts.append("queue workers " + ", ".join(w.role for w in self.workers))
        return "; ".join(parts)

    def _follow(self, path: Any) -> None:
        follow_until_stopped(self.cfg, self.r, path, self.stopped,
                             lambda f: self.followers.__setitem__(path, f))

    def push(self, pusher: Pusher) -> None:
        try:
            result = pusher.push_once()
        except REDIS_ERRORS as e:  # Redis away: the next scheduled run tries again
            AVAILABILITY.lost(e)
            return
        except redis.RedisError as e:
            log.error("push to %s failed: %s", pusher.gatherer.name, scrub(str(e)))
            return
        AVAILABILITY.ok()
        if result.sent or result.retried or result.failed or result.released:
            log.info("push %s: %s", pusher.gatherer.name, result.to_json())

    def maintain(self) -> None:
        """Expired leases back to pending, old audit entries dropped, failed messages' raw
        identity forgotten after ``retention.failed_personal_days``, and the append-only file
        rewritten after deliveries (:mod:`pirus_bridge.retention`)."""
        now = self.clock()
        keep_s = self.cfg.outbox.sent_audit_days * 86400
        personal_s = self.cfg.retention.failed_personal_days * 86400
        try:
            for name in self.cfg.gatherers:
                box = Outbox(self.r, name)
                box.reclaim_expired(now)
                box.trim_sent(keep_s, now)
                forgotten = forget_failed_identities(self.r, name, personal_s, now)
                if forgotten:
                    log.info("%s: %d failed message(s) older than %d days lost their IP "
                             "address and User-Agent", name, forgotten,
                             self.cfg.retention.failed_personal_days)
            self.aof.maybe_rewrite(self.r, delivered_total(self.r, self.cfg.gatherers))
            self.settle_parked()
        except REDIS_ERRORS as e:
            AVAILABILITY.lost(e)
        except redis.RedisError as e:
            log.error("maintenance failed: %s", scrub(str(e)))

    def settle_parked(self) -> None:
        """Count the usage lines that waited for the metadata provider and have an answer now
        (:mod:`pirus_bridge.parking`); a no-op without ``resolve:`` rules and a provider."""
        if self.parked is None:
            from pirus_bridge.ingest import Ingester

            self.parked = Ingester(self.cfg, self.r)
        if self.parked.stages.resolver is None:
            return
        s = self.parked.settle_parked()
        if s.investigations or s.requests or s.double_clicks or s.other:
            log.info("counted %d investigation(s) and %d request(s) that waited for metadata",
                     s.investigations, s.requests)

    def start(self) -> None:
        for p in self.pushers:
            self.scheduler.add_job(
                self.push, trigger_for(p.gatherer), args=[p], id=f"push:{p.gatherer.name}",
                max_instances=1, coalesce=True, next_run_time=_now(),
            )
        self.scheduler.add_job(
            self.maintain, IntervalTrigger(seconds=MAINTENANCE_INTERVAL_S, timezone="UTC"),
            id="maintenance", max_instances=1, coalesce=True, next_run_time=_now(),
        )
        self.scheduler.start()
        for path in self.tails:
            self.threads.append(threading.Thread(target=self._follow, args=(path,),
                                                 name=f"tail:{path}"))
        for w in self.workers:
            self.threads.append(threading.Thread(target=w.run, name=f"worker:{w.role}"))
        for thread in self.threads:
            thread.start()
        if self.http is not None:
            self.http.start()
        log.info("serving: %s", self.describe())

    def stop(self) -> None:
        """Let every pusher finish and settle its batch, then shut down."""
        if self.http is not None:
            self.http.stop()
        for p in self.pushers:
            p.stopping.set()
        self.stopped.set()
        for follower in list(self.followers.values()):
            follower.stopping = True
        for w in self.workers:
            w.stop()
        for thread in self.threads:
            thread.join()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.parked is not None:
            self.parked.close()
        for p in self.pushers:
            p.close()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then stop cleanly."""
        requested = threading.Event()

        def handler(signum: int, frame: Any) -> None:
            log.info("signal %d: finishing in-flight work", signum)
            requested.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        self.start()
        try:
            while not requested.wait(0.5):
                pass
        finally:
            self.stop()


def follow_until_stopped(cfg: Config, r: redis.Redis, path: Any, stopped: threading.Event,
                         on_follower: Callable[[Any], None] = lambda f: None) -> IngestSummary:
    """Follow one file until ``stopped`` is set (``tail``, and each file of ``serve``).

    If Redis goes away, wait for it (with backoff, logging once per change of state) and start
    again from the saved position: nothing uncommitted was counted, so nothing is lost or
    repeated. ``on_follower`` is told of each new follower, so a stop can reach it. Returns
    what was read and counted (runs cut short by a loss of Redis are not in it).
    """
    from pirus_bridge.tail import Follower, follow

    total = IngestSummary()
    while not stopped.is_set():
        follower = Follower(path, max_line_bytes=cfg.log.max_line_bytes)
        on_follower(follower)
        if stopped.is_set():
            break
        try:
            s = follow(cfg, r, path, follower=follower)
            AVAILABILITY.ok()
        except REDIS_ERRORS as e:
            AVAILABILITY.lost(e)
            wait_for(r, stop=stopped)
            continue
        total.lines += s.lines
        total.investigations += s.investigations
        total.requests += s.requests
    return total


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)
