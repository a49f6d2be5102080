"""The HTTP face: one app served by uvicorn on ``http.listen``, in ``serve``'s process."""

from __future__ import annotations

import pytest
import redis
import requests

from pirus_bridge.config import HttpConfig, parse_listen
from pirus_bridge.exceptions import ConfigError
from pirus_bridge.web import WebContext, create_app
from pirus_bridge.web.server import HttpServer
from tests.helpers import make_config


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8710", ("127.0.0.1", 8710)),
    ("[::1]:0", ("::1", 0)),
    ("localhost:80", ("localhost", 80)),
])
def test_parse_listen_accepts_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8710", "127.0.0.1", "127.0.0.1:http", "host:70000", ":80"])
def test_parse_listen_rejects_what_cannot_be_bound(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_config_check_names_a_bad_listen_address(redis_url: str) -> None:
    with pytest.raises(ConfigError) as e:
        make_config(redis_url, http={"listen": "127.0.0.1:port"})
    assert "http.listen" in str(e.value)


def test_server_serves_the_app_on_a_free_port(redis_url: str, r: redis.Redis) -> None:
    cfg = make_config(redis_url, http={"listen": "127.0.0.1:0"})
    server = HttpServer(create_app(WebContext(cfg, r)), cfg.http)
    server.start()
    try:
        answer = requests.get(f"http://127.0.0.1:{server.port}/livez", timeout=5)
        assert answer.status_code == 200
        assert answer.text == "ok\n"
        assert requests.get(f"http://127.0.0.1:{server.port}/nowhere", timeout=5
                            ).status_code == 404
    finally:
        server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/livez", timeout=2)


def test_server_that_cannot_bind_says_so(redis_url: str, r: redis.Redis) -> None:
    cfg = make_config(redis_url, http={"listen": "127.0.0.1:0"})
    first = HttpServer(create_app(WebContext(cfg, r)), cfg.http)
    first.start()
    try:
        taken = HttpConfig(listen=f"127.0.0.1:{first.port}")
        second = HttpServer(create_app(WebContext(cfg, r)), taken)
        with pytest.raises(Exception, match="cannot serve HTTP"):
            second.start()
    finally:
        first.stop()
