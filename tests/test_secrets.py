"""Each secret kind, through each error path this package prints: never shown.

Kinds: a Redis password (in ``redis.url`` and in ``PIRUS_BRIDGE_REDIS_URL``), gatherer URL
credentials, a Matomo ``token_auth`` and COUNTER API keys (registered when read, since their
shape does not give them away). Paths: a config problem, the one-line error of the console
script, the Redis availability log, ``/readyz``'s reasons and a failure reason on the
dashboard (the dashboard and ``/metrics`` pages themselves: ``test_ops.py``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import redis

from pirus_bridge.cli import main
from pirus_bridge.config import parse_config
from pirus_bridge.exceptions import ConfigError, PirusBridgeError
from pirus_bridge.queries import _failure_reason
from pirus_bridge.redact import register_env_secrets, register_secret
from pirus_bridge.redisconn import Availability
from tests.helpers import ROOT

REDIS_PASS, ENV_PASS = "redis-pw-1a2b", "env-redis-pw-3c4d"
TRACKER_PASS, TOKEN = "tracker-pw-5e6f", "f0e1d2c3b4a5968778695a4b3c2d1e0f"
API_KEYS = ("counter-key-one", "counter-key-two")
SECRETS = (REDIS_PASS, ENV_PASS, TRACKER_PASS, TOKEN, *API_KEYS)


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the secrets the way the readers of each kind do."""
    from tests.helpers import make_config

    make_config(f"redis://:{REDIS_PASS}@db.example.org:6379/0", gatherers={
        "t": {"url": f"https://stats:{TRACKER_PASS}@tracker.example.org/counter/"}})
    monkeypatch.setenv("PIRUS_BRIDGE_REDIS_URL", f"redis://app:{ENV_PASS}@db.example.org/0")
    make_config(None)  # reads the environment variable
    register_secret(TOKEN)
    monkeypatch.setenv("PIRUS_BRIDGE_COUNTER_API_KEYS", ",".join(API_KEYS))
    register_env_secrets("PIRUS_BRIDGE_COUNTER_API_KEYS")


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _text_with_every_secret() -> str:
    return (f"redis://:{REDIS_PASS}@db:6379 and {ENV_PASS}; "
            f"https://stats:{TRACKER_PASS}@tracker.example.org/; token_auth {TOKEN}; "
            f"api keys {API_KEYS[0]}, {API_KEYS[1]}")


def test_register_env_secrets_takes_each_comma_separated_value() -> None:
    from pirus_bridge.redact import scrub

    register_env_secrets("X", {"X": " alpha-key-1 , beta-key-2,,"})
    assert scrub("alpha-key-1 beta-key-2") == "*** ***"


def test_config_problems_show_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIRUS_BRIDGE_REDIS_URL", f"http://app:{ENV_PASS}@db.example.org/0")
    with pytest.raises(ConfigError) as e:
        parse_config({
            "redis": {"url": f"redis://:{REDIS_PASS}@db.example.org:port/0"},
            "repository": {"host": "eprints.example.ac.uk",
                           "base_url": "https://eprints.example.ac.uk",
                           "mapping": "mappings/eprints3.yaml"},
            "gatherers": {"t": {"url": f"gopher://stats:{TRACKER_PASS}@tracker.example.org/"}},
        }, base=ROOT)
    assert len(e.value.problems) == 3
    assert _leaks(str(e.value)) == []


def test_the_console_scripts_error_line_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import click

    @click.command("leaky")
    def leaky() -> None:
        raise PirusBridgeError(_text_with_every_secret())

    from pirus_bridge.cli import cli

    cli.add_command(leaky)
    monkeypatch.setattr(sys, "argv", ["pirus-bridge", "leaky"])
    try:
        with pytest.raises(SystemExit):
            main()
    finally:
        cli.commands.pop("leaky")
    err = capsys.readouterr().err
    assert err.startswith("error: ") and _leaks(err) == []


def test_the_redis_availability_log_shows_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    a = Availability()
    with caplog.at_level(logging.INFO, logger="pirus_bridge.redisconn"):
        a.lost(redis.ConnectionError(_text_with_every_secret()),
               url=f"redis://:{REDIS_PASS}@db.example.org:6379/0")
        a.lost(redis.ConnectionError(_text_with_every_secret()))
        a.ok(url=f"redis://app:{ENV_PASS}@db.example.org/0")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all(_leaks(line) == [] for line in lines), lines


def test_readiness_reasons_show_no_secret(tmp_path: Path) -> None:
    from pirus_bridge.web import WebContext
    from pirus_bridge.web.ops import readiness
    from tests.helpers import make_config

    class Broken(redis.Redis):
        def ping(self, **kwargs: object) -> bool:  # type: ignore[override]
            raise redis.ConnectionError(_text_with_every_secret())

    cfg = make_config(None)
    ok, checks = readiness(WebContext(cfg, redis.Redis()), Broken())
    assert not ok and _leaks(str(checks)) == []


def test_failure_reasons_show_no_secret() -> None:
    from pirus_bridge.outbox import DeliveryMeta

    meta = DeliveryMeta(attempts=1, last_status=401, last_error=_text_with_every_secret())
    reason = _failure_reason(meta.to_json())
    assert reason.startswith("HTTP 401: ") and _leaks(reason) == []
