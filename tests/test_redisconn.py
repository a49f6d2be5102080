"""Connecting to Redis: password redaction, the embedded default, the environment override."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pirus_bridge.config import RedisConfig, load_config
from pirus_bridge.exceptions import RedisUnavailable
from pirus_bridge.ingest import Ingester
from pirus_bridge.redisconn import connect, redact
from pirus_bridge.store import UsageStore
from tests.helpers import ROOT, wait_until
from tests.redis_server import free_port

SAMPLE = ROOT / "fixtures" / "logs" / "sample-eprints.log"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://app:s3cret@redis.example.org:6380/2", "redis://app:***@redis.example.org:6380/2"),
        ("rediss://default:s3cret@redis.example.org/0", "rediss://default:***@redis.example.org/0"),
        ("redis://:p%40ss@host:6379/0", "redis://:***@host:6379/0"),  # percent-encoded @
        ("redis://:p@ss@host:6379/0", "redis://:***@host:6379/0"),  # raw @ in the password
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),  # nothing to hide
        ("redis://app@host:6379/0", "redis://app@host:6379/0"),  # user without password
        ("redis://:s3cret@host", "redis://:***@host"),
        ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ],
)
def test_redact_hides_the_password(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert "s3cret" not in redact(url)


def test_redact_keeps_ipv6_brackets() -> None:
    assert redact("redis://:s3cret@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_redact_hides_a_password_in_the_query() -> None:
    assert "s3cret" not in redact("redis://127.0.0.1:6379/0?password=s3cret")


def test_connect_unreachable_names_the_url_without_password() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as err:
        connect(RedisConfig(url=url, socket_timeout_s=2))
    text = str(err.value)
    assert "s3cret" not in text
    assert url.replace("s3cret", "***") in text
    assert "\n" not in text


def test_connect_configured_server(redis_url: str) -> None:
    client = connect(RedisConfig(url=redis_url))
    try:
        assert client.ping()
    finally:
        client.close()


# --- the embedded default ---------------------------------------------------------------------


def redis_servers_in(folder: Path) -> list[int]:
    """Pids of redis-server processes working in ``folder`` (redis-server chdirs to its data
    dir), from /proc: the embedded server daemonizes, so it is not our child."""
    found = []
    target = folder.resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cwd == target and b"redis-server" in cmd:
            found.append(int(proc.name))
    return found


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A clean folder holding what the quick start needs; fails if a Redis is left running."""
    shutil.copy(ROOT / "config.example.yaml", tmp_path)
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    (tmp_path / "fixtures" / "logs").mkdir(parents=True)
    shutil.copy(SAMPLE, tmp_path / "fixtures" / "logs")
    yield tmp_path
    if not Path("/proc/self/cwd").exists():
        return
    var = tmp_path / "var"
    if not wait_until(lambda: not redis_servers_in(var), timeout=10):
        leftovers = redis_servers_in(var)
        for pid in leftovers:  # only servers working in this test's own folder
            os.kill(pid, 9)
        pytest.fail(f"embedded redis-server left running: pids {leftovers}")


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIRUS_BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "pirus_bridge", "--config", "config.example.yaml", *args],
        cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )


def test_embedded_default_persists_across_processes(
    site: Path, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = cli(site, "ingest", "fixtures/logs/sample-eprints.log", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    lines = len(SAMPLE.read_text().splitlines())
    assert summary["lines"] == summary["parsed"] == lines
    assert summary["investigations"] > 0 and summary["requests"] > 0

    var = site / "var"
    aof = [p for p in var.iterdir() if p.name.startswith("appendonly")]  # .aof or appendonlydir
    assert aof, sorted(p.name for p in var.iterdir())
    assert sum(f.stat().st_size for p in aof for f in ([p] if p.is_file() else p.iterdir())) > 0

    proc = cli(site, "stats", "item", "1234", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["oai_identifier"] == "oai:eprints.example.ac.uk:1234"
    assert stats["totals"]["Total_Item_Investigations"] > 0

    # The same file counted by the same code on the test server gives the same numbers.
    monkeypatch.setenv("PIRUS_BRIDGE_REDIS_URL", redis_url)
    cfg = load_config(site / "config.example.yaml")
    assert cfg.redis.url == redis_url
    expected = Ingester(cfg, r).ingest(str(SAMPLE)).to_json()
    assert summary == expected
    assert stats == UsageStore(r).item_stats("1234")


def test_redis_url_environment_overrides_the_config(site: Path, redis_url: str) -> None:
    proc = cli(
        site, "ingest", "fixtures/logs/sample-eprints.log", "--no-send", "--json",
        PIRUS_BRIDGE_REDIS_URL=redis_url,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (site / "var").exists()  # no embedded Redis was started
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.sismember("objectitems", "1234")
        assert int(client.get("u:objectviews") or 0) > 0
    finally:
        client.close()


def test_embedded_unusable_data_dir_is_one_line(site: Path) -> None:
    config = site / "config.example.yaml"
    config.write_text(config.read_text() + "\nredis:\n  data_dir: config.example.yaml/var\n")
    proc = cli(site, "stats", "item", "1234", "--json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_redis_url_environment_is_validated(site: Path) -> None:
    proc = cli(site, "stats", "item", "1234", PIRUS_BRIDGE_REDIS_URL="http://127.0.0.1:6379")
    assert proc.returncode == 1
    assert "PIRUS_BRIDGE_REDIS_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- waiting for Redis ------------------------------------------------------------------------


def test_wait_for_backs_off_then_gives_up_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pirus_bridge.redisconn import AVAILABILITY, wait_for

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    slept: list[float] = []
    AVAILABILITY.ok()
    with caplog.at_level("INFO", logger="pirus_bridge.redisconn"), \
            pytest.raises(RedisUnavailable) as err:
        wait_for(client, url=url, attempts=6, max_delay=3, sleep=slept.append)
    assert slept == [0.5, 1.0, 2.0, 3.0, 3.0]  # exponential, capped
    assert "s3cret" not in str(err.value) and "***" in str(err.value)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert all("s3cret" not in r.getMessage() for r in caplog.records)
    AVAILABILITY.ok()


def test_availability_logs_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    from pirus_bridge.redisconn import Availability

    now = [100.0]
    a = Availability(clock=lambda: now[0])
    a.url = "redis://127.0.0.1:1/0"
    with caplog.at_level("WARNING", logger="pirus_bridge.redisconn"):
        a.ok()
        for _ in range(5):
            a.lost(redis.ConnectionError("Connection refused"))
        now[0] = 130.0
        for _ in range(3):
            a.ok()
        a.lost(redis.TimeoutError("Timeout reading from socket"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "unavailable (connection refused" in lines[0]
    assert "available again (after 30 s without it)" in lines[1]
    assert "Timeout reading" in lines[2]


def test_service_stopped_while_waiting_exits_1_without_the_password(tmp_path: Path) -> None:
    import signal

    from tests.test_cli import write_config

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    config = write_config(tmp_path, url)
    proc = subprocess.Popen([sys.executable, "-m", "pirus_bridge", "--config", str(config),
                             "push"], stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        assert proc.stderr is not None
        lines.append(proc.stderr.readline())  # the warning that it waits
        assert "unavailable" in lines[0], lines
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines) + rest
    assert proc.returncode == 1, err
    assert "stopped while waiting for Redis at redis://:***@127.0.0.1" in err
    assert "s3cret" not in err and "Traceback" not in err
