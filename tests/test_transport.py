"""Delivery on a university network: egress proxies, a private CA, redirects, one deadline.

Everything runs against real servers on 127.0.0.1: the test gatherer (plain and HTTPS with a
certificate from a CA made here), a real CONNECT proxy (tests/proxy.py). The pure rules
(``NO_PROXY`` matching, proxy URLs, which redirects may be followed) get tables of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pirus_bridge.exceptions import DeliveryError
from pirus_bridge.proxy import Proxy, bypasses, proxy_for
from pirus_bridge.sender import Sender, redirect_target
from tests.gatherer import Gatherer, Reply
from tests.proxy import PROXY_VARIABLES
from tests.proxy import Proxy as ProxyServer
from tests.tls import Authority, ServerCert, issue, make_authority

QUERY = "url_ver=Z39.88-2004&req_id=192.0.2.7&rft.artnum=oai%3Ax%3A1&rft_dat=Request"


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment without proxy variables."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority, ServerCert]:
    """The campus CA, an unrelated CA, and the gatherer's certificate from the campus CA."""
    folder = tmp_path_factory.mktemp("pki")
    campus, other = make_authority(folder, "campus-ca"), make_authority(folder, "other-ca")
    return campus, other, issue(campus, folder)


@pytest.fixture
def gatherer() -> Iterator[Gatherer]:
    with Gatherer() as g:
        yield g


@pytest.fixture
def tls_gatherer(pki: tuple[Authority, Authority, ServerCert]) -> Iterator[Gatherer]:
    with Gatherer(tls=pki[2].server_context()) as g:
        yield g


@pytest.fixture
def proxy() -> Iterator[ProxyServer]:
    with ProxyServer() as p:
        yield p


def closed_port() -> int:
    from tests.redis_server import free_port

    return free_port()


def kev(g: Gatherer) -> str:
    return f"{g.url}?{QUERY}"


def send_error(sender: Sender, url: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        sender.send(url)
    return info.value


# -- proxies -----------------------------------------------------------------------------------


def test_transport_plain_http_goes_through_the_environments_proxy(
    gatherer: Gatherer, proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with Sender(read_timeout=2) as s:
        assert s.route(gatherer.url) == f"via proxy 127.0.0.1:{proxy.port}"
        for _ in range(3):
            assert s.send(kev(gatherer)).status == 200
    assert [(x.method, x.target) for x in proxy.seen] == [("GET", kev(gatherer))] * 3
    assert [q.query["rft.artnum"] for q in gatherer.requests] == ["oai:x:1"] * 3
    assert gatherer.connections == 1  # kept alive through the proxy


def test_transport_https_is_tunnelled_and_the_private_ca_trusted(
    tls_gatherer: Gatherer, proxy: ProxyServer, pki: tuple[Authority, Authority, ServerCert],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("https_proxy", proxy.url)  # lower-case names count too
    with Sender(read_timeout=2, ca_file=str(pki[0].cert_file)) as s:
        assert s.send(kev(tls_gatherer)).status == 200
        assert s.send(kev(tls_gatherer)).status == 200
    assert [(x.method, x.target) for x in proxy.seen] == [
        ("CONNECT", f"127.0.0.1:{tls_gatherer.port}")]  # one tunnel, kept alive
    assert len(tls_gatherer.requests) == 2 and tls_gatherer.requests[0].query["rft_dat"] == \
        "Request"  # the message itself travelled inside TLS, never seen by the proxy


def test_transport_the_gatherers_proxy_wins_and_none_goes_direct(
    gatherer: Gatherer, proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # a dead proxy
    with Sender(read_timeout=2, proxy=proxy.url) as s:
        assert s.send(kev(gatherer)).status == 200
    with Sender(read_timeout=2, proxy="none") as s:
        assert s.route(gatherer.url) == "direct"
        assert s.send(kev(gatherer)).status == 200
    with Sender(read_timeout=2) as s:
        err = send_error(s, kev(gatherer))
        assert err.retryable and err.reason.startswith("connection refused by proxy 127.0.0.1:")
    assert len(proxy.seen) == 1 and gatherer.received == 2


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "*", "localhost, 127.0.0.1"])
def test_transport_no_proxy_goes_direct(
    gatherer: Gatherer, monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    with Sender(read_timeout=2) as s:
        assert s.send(kev(gatherer)).status == 200


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_transport_proxy_credentials_are_sent_and_never_shown(
    gatherer: Gatherer, tls_gatherer: Gatherer, pki: tuple[Authority, Authority, ServerCert],
    scheme: str,
) -> None:
    target = tls_gatherer if scheme == "https" else gatherer
    ca = str(pki[0].cert_file)
    with ProxyServer(credentials="campus:s3cret-pw") as proxy:
        with Sender(read_timeout=2, ca_file=ca, proxy=proxy.url_with("campus:s3cret-pw")) as s:
            assert s.send(kev(target)).status == 200
            assert "s3cret" not in s.route(target.url)
        with Sender(read_timeout=2, ca_file=ca, proxy=proxy.url_with("campus:wrong")) as s:
            err = send_error(s, kev(target))
    assert err.status == 407 and not err.retryable  # a setting to fix, not a message to retry
    assert "407" in err.reason and "s3cret" not in str(err) and "wrong" not in str(err)
    assert proxy.seen[0].authorization == "Basic Y2FtcHVzOnMzY3JldC1wdw=="
    assert target.received == 1


def test_transport_a_proxy_refusing_the_tunnel_is_not_a_message_fault(
    tls_gatherer: Gatherer, pki: tuple[Authority, Authority, ServerCert]
) -> None:
    with ProxyServer(refuse=503) as busy, Sender(read_timeout=2, proxy=busy.url,
                                                 ca_file=str(pki[0].cert_file)) as s:
        err = send_error(s, kev(tls_gatherer))
    assert (err.status, err.retryable) == (503, True)
    assert err.reason == "proxy refused the tunnel: HTTP 503 Service Unavailable"


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "expected"),
    [
        ("repo.example.ac.uk", 443, "", False),
        ("repo.example.ac.uk", 443, "*", True),
        ("repo.example.ac.uk", 443, "example.ac.uk", True),
        ("repo.example.ac.uk", 443, ".example.ac.uk", True),
        ("example.ac.uk", 443, ".example.ac.uk", True),
        ("badexample.ac.uk", 443, "example.ac.uk", False),
        ("repo.example.ac.uk", 443, "repo.example.ac.uk:8443", False),
        ("repo.example.ac.uk", 8443, "repo.example.ac.uk:8443", True),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("10.1.2.3", 80, "192.168.0.0/16, 10.1.2.3", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("2001:db8::5", 443, "2001:db8::/32", True),
        ("2001:db8::5", 443, "[2001:db8::5]:443", True),
        ("2001:db8::5", 443, "::1", False),
        ("LOCALHOST", 80, "localhost", True),
    ],
)
def test_bypasses_no_proxy_entries(host: str, port: int, no_proxy: str, expected: bool) -> None:
    assert bypasses(host, port, no_proxy) is expected


@pytest.mark.parametrize(
    ("url", "host", "port", "auth"),
    [
        ("http://proxy.example.ac.uk:3128", "proxy.example.ac.uk", 3128, None),
        ("http://proxy.example.ac.uk", "proxy.example.ac.uk", 80, None),
        ("proxy.example.ac.uk:8080", "proxy.example.ac.uk", 8080, None),
        ("http://u%40x:p%3Aw@proxy:3128/", "proxy", 3128, "Basic dUB4OnA6dw=="),
    ],
)
def test_proxy_parse(url: str, host: str, port: int, auth: str | None) -> None:
    assert Proxy.parse(url) == Proxy(host, port, auth)


@pytest.mark.parametrize("url", ["https://proxy:3128", "socks5://proxy:1080", "http://:3128",
                                 "http://proxy:99999"])
def test_proxy_parse_refuses_what_is_not_spoken(url: str) -> None:
    with pytest.raises(DeliveryError) as info:
        Proxy.parse(url)
    assert not info.value.retryable


def test_proxy_for_picks_by_scheme() -> None:
    env = {"http": "http://a:1", "https": "http://b:2", "no": "skip.example"}
    assert proxy_for(("http", "x.example", 80), None, env) == Proxy("a", 1)
    assert proxy_for(("https", "x.example", 443), None, env) == Proxy("b", 2)
    assert proxy_for(("https", "skip.example", 443), None, env) is None
    assert proxy_for(("https", "x.example", 443), None, {"all": "http://c:3"}) == Proxy("c", 3)
    assert proxy_for(("https", "x.example", 443), "none", env) is None
    assert proxy_for(("https", "skip.example", 443), "http://d:4", env) == Proxy("d", 4)


# -- TLS ---------------------------------------------------------------------------------------


def test_transport_untrusted_certificate_is_refused_before_anything_is_sent(
    tls_gatherer: Gatherer, pki: tuple[Authority, Authority, ServerCert]
) -> None:
    for ca_file in (None, str(pki[1].cert_file)):  # the system store; another CA
        with Sender(read_timeout=2, ca_file=ca_file) as s:
            err = send_error(s, kev(tls_gatherer))
        assert err.reason.startswith("TLS certificate not trusted: ") and not err.retryable
    assert tls_gatherer.received == 0


def test_transport_unreadable_ca_file_is_a_setting_to_fix(tls_gatherer: Gatherer,
                                                         tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with Sender(read_timeout=2, ca_file=str(bad)) as s:
        err = send_error(s, kev(tls_gatherer))
    assert err.reason.startswith(f"cannot read the CA file {bad}") and not err.retryable


# -- redirects ---------------------------------------------------------------------------------

Q = "?url_ver=Z39.88-2004&req_id=192.0.2.7"


@pytest.mark.parametrize(
    ("method", "url", "status", "location", "expected"),
    [
        ("GET", f"http://a/c/{Q}", 301, f"https://a/c/{Q}", (f"https://a/c/{Q}", "GET")),
        ("GET", f"https://a/c/{Q}", 302, f"/d/{Q}", (f"https://a/d/{Q}", "GET")),
        ("GET", f"https://a/c{Q}", 308, f"https://b/c/{Q}", (f"https://b/c/{Q}", "GET")),
        ("HEAD", f"http://a/c/{Q}", 303, f"/c/{Q}", (f"http://a/c/{Q}", "GET")),
        ("POST", "https://a/matomo.php", 307, "/m.php", ("https://a/m.php", "POST")),
        ("POST", "https://a/matomo.php", 308, "https://b/m.php", ("https://b/m.php", "POST")),
        ("GET", f"https://a/c/{Q}", 301, f"http://a/c/{Q}", "down to http refused"),
        ("GET", f"http://a/c/{Q}", 302, "ftp://a/c/", "non-HTTP location"),
        ("GET", f"http://a/c/{Q}", 302, "javascript:alert(1)", "non-HTTP location"),
        ("GET", f"http://a/c/{Q}", 301, "/c/", "drops the message's query"),
        ("GET", f"http://a/c/{Q}", 302, "/c/?url_ver=Z39.88-2004", "drops the message's query"),
        ("POST", "https://a/matomo.php", 301, "/m.php", "turn the POST into a GET"),
        ("POST", "https://a/matomo.php", 303, "/m.php", "turn the POST into a GET"),
        ("POST", "https://a/matomo.php", 307, "http://a/m.php", "down to http refused"),
    ],
)
def test_redirect_target(method: str, url: str, status: int, location: str,
                         expected: tuple[str, str] | str) -> None:
    if isinstance(expected, tuple):
        assert redirect_target(method, url, status, location) == expected
        return
    with pytest.raises(DeliveryError) as info:
        redirect_target(method, url, status, location)
    assert expected in info.value.reason and not info.value.retryable
    assert info.value.status == status


def test_transport_https_redirect_down_to_http_sends_nothing_in_clear(
    tls_gatherer: Gatherer, gatherer: Gatherer, pki: tuple[Authority, Authority, ServerCert]
) -> None:
    tls_gatherer.set_default(301, headers={"Location": kev(gatherer)})
    with Sender(read_timeout=2, ca_file=str(pki[0].cert_file)) as s:
        err = send_error(s, kev(tls_gatherer))
    assert "down to http refused" in err.reason and not err.retryable
    assert gatherer.received == 0  # no raw IP went out unencrypted


def test_transport_http_redirect_up_to_https_is_followed(
    tls_gatherer: Gatherer, gatherer: Gatherer, pki: tuple[Authority, Authority, ServerCert]
) -> None:
    gatherer.set_default(301, headers={"Location": kev(tls_gatherer)})
    with Sender(read_timeout=2, ca_file=str(pki[0].cert_file)) as s:
        assert s.send(kev(gatherer)).status == 200
    assert gatherer.received == 1 and tls_gatherer.received == 1
    assert tls_gatherer.requests[0].query["req_id"] == "192.0.2.7"


def test_transport_redirect_of_a_post_to_get_is_not_delivered(gatherer: Gatherer) -> None:
    gatherer.script([Reply(302, headers={"Location": "/elsewhere"})])
    with Sender(read_timeout=2) as s, pytest.raises(DeliveryError) as info:
        s.send(gatherer.url, body=b"{}", content_type="application/json")  # a body: a POST
    assert "turn the POST into a GET" in info.value.reason and not info.value.retryable
    assert [(q.method, q.path) for q in gatherer.requests] == [("POST", "/counter/")]


# -- the deadline ------------------------------------------------------------------------------


def test_transport_a_dripping_answer_ends_at_the_deadline(gatherer: Gatherer) -> None:
    """Each byte arrives well within the read timeout; the exchange as a whole may not last."""
    gatherer.script([Reply(200, body=b"x" * 100, drip=0.05)])
    with Sender(read_timeout=1, deadline=0.5) as s:
        started = time.monotonic()
        err = send_error(s, kev(gatherer))
        took = time.monotonic() - started
        assert s.send(kev(gatherer)).status == 200  # on a new connection
    assert err.reason == "no complete answer within the 0.5s deadline" and err.retryable
    assert 0.45 <= took < 2.5  # the drip would take 6 s; a busy machine may add a little
    assert gatherer.connections == 2


def test_transport_the_deadline_covers_redirects(gatherer: Gatherer) -> None:
    url = kev(gatherer)
    gatherer.script([Reply(302, headers={"Location": url.replace("/counter/", f"/c{i}/")},
                           delay=0.3) for i in range(3)])
    with Sender(read_timeout=1, deadline=0.5) as s:
        err = send_error(s, url)
    assert "0.5s deadline" in err.reason
