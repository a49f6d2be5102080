"""The dashboard in a real headless Chromium (Debian's ``chromium`` package), offline.

``.ci/run`` installs the package when it runs as root; elsewhere, without ``/usr/bin/chromium``,
these tests are skipped and say why.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from pirus_bridge.accounting import month_accounting
from pirus_bridge.redisconn import connect
from pirus_bridge.web import WebContext, create_app
from pirus_bridge.web.server import HttpServer
from tests.dashboard_support import CHROMIUM, browser_command, demo_config, fill, run_browser

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no headless browser: {CHROMIUM} is missing (apt-get install chromium; "
           ".ci/run does it when it runs as root)")

PHONE = 390  # CSS pixels: a common phone width


@pytest.fixture
def dashboard(tmp_path: Path, redis_url: str, r: redis.Redis) -> Iterator[dict[str, Any]]:
    cfg = demo_config(redis_url, http={"listen": "127.0.0.1:0"})
    state = fill(cfg, r, tmp_path, time.time())
    client = connect(cfg.redis)
    server = HttpServer(create_app(WebContext(cfg, client, lambda: {"scheduler": True})),
                        cfg.http)
    server.start()
    try:
        month = time.strftime("%Y-%m", time.gmtime())
        yield {**state, "url": f"http://127.0.0.1:{server.port}/", "tmp": tmp_path,
               "month_lines": month_accounting(r, month)["lines"]}
    finally:
        server.stop()
        client.close()


def _text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_dashboard_renders_every_panel_in_chromium(dashboard: dict[str, Any]) -> None:
    dom = run_browser(browser_command(dashboard["url"], dashboard["tmp"] / "profile",
                                      width=PHONE))
    text = _text(dom)
    for heading in ("Pipeline freshness", "Outbox", "Failure queue", "Accounting",
                    "Usage over time", "Top items"):
        assert heading in text
    assert str(dashboard["log"].resolve()) in text  # the source, with its freshness
    assert f"{dashboard['month_lines']:,} lines" in text
    assert re.search(r"tracker.*?" + f"{dashboard['failed']}" + r" failed", text)
    assert f"{dashboard['backoff']} in backoff" in text
    assert "paused until" in text  # the gatherer whose circuit is open
    assert "HTTP 404 Not Found" in text
    assert "tracker-pass-123" not in dom and "statsuser:***@" in text
    assert dom.count("<rect") > 60  # the charts' bars, drawn as inline SVG
    assert "oai:eprints.example.ac.uk:" in text  # top items


def test_dashboard_fits_a_phone_screen(dashboard: dict[str, Any]) -> None:
    """Laid out at phone width, nothing but a table's own scroll box is wider than the screen.

    The page has no script of its own; a copy with a measuring probe appended is opened from a
    file (the page needs nothing but itself, so the copy renders the same). Chromium's window is
    at least 500 px wide, so the probe narrows the page to the phone's width itself; the
    page's narrow-screen rules (below 40rem) apply at both widths.
    """
    html = requests.get(dashboard["url"], timeout=10).text
    probe = (
        f"<script>document.documentElement.style.width='{PHONE}px';"
        "const out=[...document.querySelectorAll('body *')]"
        ".filter(e=>!e.parentElement.closest('.scroll'))"
        ".map(e=>Math.ceil(e.getBoundingClientRect().right));"
        "document.body.insertAdjacentHTML('beforeend','<p id=\"probe\">'+Math.max(...out)"
        "+'</p>')</script>")
    copy = dashboard["tmp"] / "dashboard.html"
    copy.write_text(html.replace("</body>", probe + "</body>"))
    dom = run_browser(browser_command(copy.as_uri(), dashboard["tmp"] / "profile",
                                      width=PHONE))
    m = re.search(r'<p id="probe">(\d+)</p>', dom)
    assert m is not None, dom[-500:]
    assert 300 < int(m.group(1)) <= PHONE
