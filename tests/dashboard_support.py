"""A lively state for the dashboard: usage over the last weeks, sources, an outbox with
failures and a paused gatherer — made through the real ingest and outbox code.

``python -m tests.dashboard_support OUT.png`` fills a private Redis with it, serves the
dashboard and saves a headless-Chromium screenshot (the one in ``docs/``).
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from pirus_bridge.circuit import Circuit
from pirus_bridge.config import Config
from pirus_bridge.ingest import Ingester
from pirus_bridge.outbox import DeliveryMeta, Outbox
from tests.helpers import OTHER_PERSON, PERSON, ROBOT, make_config

CHROMIUM = "/usr/bin/chromium"
ITEMS = {"1234": 9, "101": 6, "342": 5, "102": 4, "215": 3, "103": 2}  # item → popularity
AGENTS = [PERSON, OTHER_PERSON,
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"]
TRACKER_URL = "https://statsuser:tracker-pass-123@tracker.example.org/counter/"


def demo_config(redis_url: str, **sections: Any) -> Config:
    gatherers = {
        "tracker": {"url": TRACKER_URL, "metrics": ["request", "investigation"]},
        "regional": {"url": "https://stats.example.net/counter/", "metrics": ["request"]},
    }
    return make_config(redis_url, gatherers=gatherers, **sections)


def demo_log(now: float, days: int = 30, seed: int = 7) -> list[str]:
    """Combined-format lines over the last ``days`` days, in time order."""
    rnd = random.Random(seed)
    start = int(now) - days * 86400
    lines: list[tuple[int, str]] = []
    for day in range(days):
        busy = 8 + int(6 * (1 + (day % 7 < 5))) + rnd.randint(0, 6)
        for _ in range(busy):
            ts = start + day * 86400 + rnd.randint(0, 86399)
            if ts > now - 60:
                continue
            item = rnd.choices(list(ITEMS), weights=list(ITEMS.values()))[0]
            ip = f"192.0.2.{rnd.randint(1, 250)}"
            ua = rnd.choice(AGENTS)
            path = f"/{item}/" if rnd.random() < 0.6 else f"/{item}/1/paper-{item}.pdf"
            lines.append((ts, _line(ts, path, ip, ua, 200)))
            if rnd.random() < 0.4:
                lines.append((ts + 1, _line(ts + 1, f"/{item}/", "198.51.100.9", ROBOT, 200)))
            if rnd.random() < 0.1:
                lines.append((ts + 2, _line(ts + 2, "/nothing-here", ip, ua, 404)))
            if rnd.random() < 0.3:
                lines.append((ts + 3, _line(ts + 3, "/style/auto.css", ip, ua, 200)))
    lines.sort()
    return [text for _, text in lines]


def _line(ts: int, path: str, ip: str, ua: str, status: int) -> str:
    when = dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'{ip} - - [{when}] "GET {path} HTTP/1.1" {status} 4000 "-" "{ua}"\n'


def fill(cfg: Config, r: redis.Redis, workdir: Path, now: float) -> dict[str, Any]:
    """Ingest the demo log, fail and back off some messages, pause one gatherer."""
    log = workdir / "access.log"
    log.write_text("".join(demo_log(now)))
    summary = Ingester(cfg, r).ingest(str(log))
    box = Outbox(r, "tracker")
    reasons = [(404, "HTTP 404 Not Found"),
               (None, f"connection refused by {TRACKER_URL}"),
               (400, "HTTP 400 Bad Request: rft.artnum is not a known OAI identifier")]
    failed = box.claim(7, 300, now + 5)
    pipe = r.pipeline(transaction=False)
    for i, message in enumerate(failed):
        status, error = reasons[i % len(reasons)]
        meta = DeliveryMeta(attempts=12 if status is None else 1, first_attempt=now - 3600,
                            last_attempt=now - 60, last_status=status, last_error=error)
        box.settle(pipe, "fail", message, now=now - 60 * (i + 1), meta=meta)
    backoff = box.claim(25, 300, now + 5)
    for message in backoff:
        box.settle(pipe, "retry", message, now=now, due=now + 1800,
                   meta=DeliveryMeta(attempts=2, last_status=503, last_error="HTTP 503"))
    pipe.execute()
    paused: Any = Circuit(state="open", failures=5, next_probe=now + 240).to_fields()
    r.hset(Outbox(r, "regional").keys["circuit"], mapping=paused)
    return {"summary": summary, "failed": len(failed), "backoff": len(backoff), "log": log}


def browser_command(url: str, profile: Path, *, screenshot: Path | None = None,
                    width: int = 1200, height: int = 2400) -> list[str]:
    """Headless Chromium from Debian's package, offline: no network but 127.0.0.1."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           f"--window-size={width},{height}"]
    cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    return [*cmd, url]


def run_browser(cmd: list[str], timeout: float = 90) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def main(out: str) -> None:
    from pirus_bridge.web import WebContext, create_app
    from pirus_bridge.web.server import HttpServer
    from tests.redis_server import RedisServer

    work = Path(tempfile.mkdtemp(prefix="pb-dashboard-"))
    server = RedisServer(work / "redis", appendonly=False).start()
    try:
        r = server.client()
        cfg = demo_config(server.url, http={"listen": "127.0.0.1:0"})
        fill(cfg, r, work, time.time())
        http = HttpServer(create_app(WebContext(cfg, r, lambda: {"scheduler": True})),
                          cfg.http)
        http.start()
        try:
            run_browser(browser_command(f"http://127.0.0.1:{http.port}/", work / "profile",
                                        screenshot=Path(out).resolve(), height=2720))
        finally:
            http.stop()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dashboard.png")
