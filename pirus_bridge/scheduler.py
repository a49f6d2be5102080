"""The long-running service: scheduled pushes, maintenance, tails and queue workers.

Each enabled gatherer is pushed on its own ``interval_s`` or ``cron`` schedule; one job never
overlaps itself (``max_instances=1``, missed runs coalesce). Maintenance runs every few minutes:
it returns expired leases to pending (so ``outbox stats`` tells the truth while no pusher runs)
and forgets delivered ids older than the audit period. The files of ``live.tail`` are followed,
and with ``live.queue_workers`` the classifier, counter and logger run too, each in a thread.
On SIGTERM or SIGINT every component finishes the batch in hand, commits or settles it, and the
process exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import redis
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pirus_bridge.config import Config, GathererConfig
from pirus_bridge.outbox import Outbox
from pirus_bridge.pusher import Pusher

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_S = 300


def trigger_for(g: GathererConfig) -> CronTrigger | IntervalTrigger:
    """The gatherer's schedule: its crontab expression if it has one, else its interval."""
    if g.cron:
        return CronTrigger.from_crontab(g.cron, timezone="UTC")
    return IntervalTrigger(seconds=g.interval_s, timezone="UTC")


class Service:
    """Scheduled pushes and maintenance in one process (``pirus-bridge serve``)."""

    def __init__(self, cfg: Config, r: redis.Redis) -> None:
        self.cfg = cfg
        self.r = r
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
        """Follow one file until stopped; if Redis goes away, start again from the saved
        position (nothing uncommitted was counted, so nothing is lost or repeated)."""
        from pirus_bridge.tail import Follower, follow

        while not self.stopped.is_set():
            follower = self.followers[path] = Follower(path)
            if self.stopped.is_set():
                break
            try:
                follow(self.cfg, self.r, path, follower=follower)
            except redis.RedisError as e:
                log.warning("tail %s paused: Redis unavailable (%s)", path, e)
                self.stopped.wait(5)

    def push(self, pusher: Pusher) -> None:
        try:
            result = pusher.push_once()
        except redis.RedisError as e:  # Redis away: log it and try again next time
            log.warning("push to %s skipped: Redis unavailable (%s)", pusher.gatherer.name, e)
            return
        if result.sent or result.retried or result.failed or result.released:
            log.info("push %s: %s", pusher.gatherer.name, result.to_json())

    def maintain(self) -> None:
        now = time.time()
        keep_s = self.cfg.outbox.sent_audit_days * 86400
        try:
            for name in self.cfg.gatherers:
                box = Outbox(self.r, name)
                box.reclaim_expired(now)
                box.trim_sent(keep_s, now)
        except redis.RedisError as e:
            log.warning("maintenance skipped: Redis unavailable (%s)", e)

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


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)
