"""Sender against a real HTTP gatherer on 127.0.0.1: success, retry classification, methods."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pirus_bridge import __version__
from pirus_bridge.contextobject import IRUS, ContextEntry, build_kev, build_url, build_xml
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.exceptions import DeliveryError
from pirus_bridge.sender import MAX_RETRY_AFTER_S, Sender, parse_retry_after
from tests.gatherer import Gatherer, Reply

HOST = "eprints.example.ac.uk"
EVENT = UsageEvent(
    ts=1709211909,
    item="1234",
    oai_identifier=f"oai:{HOST}:1234",
    metric=MetricType.REQUEST,
    url=f"https://{HOST}/1234/1/paper.pdf",
    ip="192.0.2.7",
    user_agent="Mozilla/5.0 (X11) ünï",
    referer="",
    status=200,
)
PAIRS = build_kev(EVENT, profile=IRUS, repository_host=HOST)


@pytest.fixture
def gatherer() -> Iterator[Gatherer]:
    with Gatherer() as g:
        yield g


@pytest.fixture
def sender() -> Iterator[Sender]:
    with Sender(connect_timeout=0.3, read_timeout=0.3) as s:
        yield s


def kev_url(g: Gatherer) -> str:
    return build_url(g.url, PAIRS)


def send_error(sender: Sender, url: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        sender.send(url)
    return info.value


# -- parse_retry_after (pure) ------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # in the past: now
        ("99999999", MAX_RETRY_AFTER_S),
        (email.utils.formatdate(NOW + 10 * 86400, usegmt=True), MAX_RETRY_AFTER_S),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("1.5", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


# -- against the gatherer ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 204])
def test_send_2xx_is_success(gatherer: Gatherer, sender: Sender, status: int) -> None:
    gatherer.script([status])
    result = sender.send(kev_url(gatherer))
    assert result.status == status
    assert result.elapsed > 0
    (req,) = gatherer.requests
    assert req.method == "GET"
    assert req.path == "/counter/"
    assert req.query == dict(PAIRS)
    assert req.headers["User-Agent"] == f"pirus-bridge/{__version__}"


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_send_retryable_statuses(gatherer: Gatherer, sender: Sender, status: int) -> None:
    gatherer.script([Reply(status, body="try later")])
    err = send_error(sender, kev_url(gatherer))
    assert err.retryable
    assert err.status == status
    assert err.retry_after is None
    assert err.reason.startswith(f"HTTP {status} ")


def test_send_429_retry_after_seconds(gatherer: Gatherer, sender: Sender) -> None:
    gatherer.script([Reply(429, headers={"Retry-After": "7"})])
    err = send_error(sender, kev_url(gatherer))
    assert err.retryable and err.status == 429
    assert err.reason == "HTTP 429 Too Many Requests"
    assert err.retry_after == pytest.approx(7)


def test_send_503_retry_after_http_date(gatherer: Gatherer, sender: Sender) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    gatherer.script([Reply(503, headers={"Retry-After": when})])
    err = send_error(sender, kev_url(gatherer))
    assert err.retryable
    assert err.retry_after == pytest.approx(120, abs=2)


def test_send_404_not_retryable_with_excerpt(gatherer: Gatherer, sender: Sender) -> None:
    gatherer.script([Reply(404, body="no such tracker " + "x" * 500)])
    err = send_error(sender, kev_url(gatherer))
    assert not err.retryable
    assert err.status == 404
    assert err.reason == "HTTP 404 Not Found"
    assert err.body_excerpt == ("no such tracker " + "x" * 500)[:300]


def test_send_400_not_retryable(gatherer: Gatherer, sender: Sender) -> None:
    gatherer.script([Reply(400, body="bad url_tim")])
    err = send_error(sender, kev_url(gatherer))
    assert (err.retryable, err.reason, err.body_excerpt) == (
        False,
        "HTTP 400 Bad Request",
        "bad url_tim",
    )


def test_send_read_timeout_retryable(gatherer: Gatherer, sender: Sender) -> None:
    gatherer.script([Reply(delay=2.0)])
    started = time.perf_counter()
    err = send_error(sender, kev_url(gatherer))
    assert time.perf_counter() - started < 1.5
    assert err.retryable and err.status is None
    assert err.reason == "read timeout after 0.3s"
    # the next request is served normally on a fresh connection
    assert sender.send(kev_url(gatherer)).status == 200


def test_send_connection_refused_then_recovery(gatherer: Gatherer, sender: Sender) -> None:
    url = kev_url(gatherer)
    assert sender.send(url).status == 200  # a pooled keep-alive connection now exists
    gatherer.stop()
    err = send_error(sender, url)
    assert err.retryable and err.status is None
    assert err.reason == "connection refused"
    gatherer.start()
    assert gatherer.url in url
    assert sender.send(url).status == 200


def test_send_dropped_connection_retryable(gatherer: Gatherer, sender: Sender) -> None:
    gatherer.script(["close"])
    err = send_error(sender, kev_url(gatherer))
    assert err.retryable and err.status is None
    assert "connection" in err.reason
    assert sender.send(kev_url(gatherer)).status == 200


def test_send_head_method(gatherer: Gatherer) -> None:
    with Sender(method="HEAD", read_timeout=0.3) as s:
        gatherer.script([Reply(200, body="ignored")])
        assert s.send(kev_url(gatherer)).status == 200
        gatherer.script([Reply(404, body="nope")])
        err = send_error(s, kev_url(gatherer))
    assert err.reason == "HTTP 404 Not Found" and err.body_excerpt == ""
    assert [r.method for r in gatherer.requests] == ["HEAD", "HEAD"]
    assert gatherer.requests[0].query == dict(PAIRS)


def test_send_post_kev_as_form(gatherer: Gatherer) -> None:
    with Sender(method="post", read_timeout=0.3) as s:
        assert s.send(kev_url(gatherer)).status == 200
    (req,) = gatherer.requests
    assert req.method == "POST"
    assert req.query == {}
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.form == dict(PAIRS)


def test_send_xml_batch(gatherer: Gatherer, sender: Sender) -> None:
    body = build_xml([ContextEntry(EVENT, HOST)] * 3)
    assert sender.send(gatherer.url, body=body,
                       content_type="application/xml; charset=utf-8").status == 200
    (req,) = gatherer.requests
    assert req.method == "POST"
    assert req.headers["Content-Type"].startswith("application/xml")
    assert req.body == body


def test_keep_alive_reuses_connections(gatherer: Gatherer, sender: Sender) -> None:
    url = kev_url(gatherer)
    for _ in range(50):
        sender.send(url)
    assert len(gatherer.requests) == 50
    assert gatherer.connections <= 2
    assert len({r.client_port for r in gatherer.requests}) <= 2


def test_redirect_followed_within_http(gatherer: Gatherer, sender: Sender) -> None:
    url = kev_url(gatherer)
    gatherer.script([Reply(307, headers={"Location": "/moved/?" + url.split("?", 1)[1]})])
    assert sender.send(url).status == 200
    assert [r.path for r in gatherer.requests] == ["/counter/", "/moved/"]
    assert gatherer.requests[0].query == gatherer.requests[1].query == dict(PAIRS)


def test_redirect_that_drops_the_query_is_not_delivered(gatherer: Gatherer,
                                                         sender: Sender) -> None:
    gatherer.script([Reply(301, headers={"Location": "/moved/"})])
    err = send_error(sender, kev_url(gatherer))
    assert not err.retryable and err.status == 301 and "drops the message's query" in err.reason
    assert [r.path for r in gatherer.requests] == ["/counter/"]  # the 200 there never came


def test_redirect_to_non_http_refused(gatherer: Gatherer, sender: Sender) -> None:
    gatherer.script([Reply(302, headers={"Location": "file:///etc/passwd"})])
    err = send_error(sender, kev_url(gatherer))
    assert not err.retryable
    assert "non-HTTP location" in err.reason
    assert len(gatherer.requests) == 1


def test_redirect_loop_gives_up(gatherer: Gatherer, sender: Sender) -> None:
    url = kev_url(gatherer)
    gatherer.set_default(302, headers={"Location": url})
    err = send_error(sender, url)
    assert not err.retryable and err.reason.startswith("redirect loop")
    assert gatherer.received == 1  # back to the URL already visited: stop at once


def test_sender_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="GET, HEAD, POST"):
        Sender(method="PUT")


def test_gatherer_wait_for_and_clear(gatherer: Gatherer, sender: Sender) -> None:
    sender.send(kev_url(gatherer))
    assert len(gatherer.wait_for(1, timeout=1)) == 1
    gatherer.clear()
    assert gatherer.requests == [] and gatherer.received == 0
    with pytest.raises(TimeoutError):
        gatherer.wait_for(1, timeout=0.05)


def test_connection_close_header_opens_a_new_connection(gatherer: Gatherer, sender: Sender) -> None:
    gatherer.script([Reply(200, headers={"Connection": "close"})])
    for _ in range(3):
        assert sender.send(kev_url(gatherer)).status == 200
    assert [r.connection for r in gatherer.requests] == [1, 2, 2]


def test_concurrent_sends_share_a_bounded_pool(gatherer: Gatherer) -> None:
    with Sender(concurrency=4, read_timeout=1) as s, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: s.send(kev_url(gatherer)).status, range(100)))
    assert results == [200] * 100
    assert gatherer.received == 100
    assert gatherer.connections <= 8  # 4 in use at once; surplus ones are closed, not leaked


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///nohost", "http://127.0.0.1:99999/"])
def test_invalid_url_not_retryable(sender: Sender, url: str) -> None:
    err = send_error(sender, url)
    assert not err.retryable and "invalid gatherer URL" in err.reason
