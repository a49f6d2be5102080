"""RedisLogHandler against a real redis-server: order, concurrency, outages, drops, the CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from pirus_bridge.loghandler import DROPPED, RedisLogHandler, access_line
from pirus_bridge.logparse import LogFormat
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "q:loglines"
MakeHandler = Callable[..., RedisLogHandler]


def wait_until(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def consumed(r: redis.Redis) -> list[str]:
    """What a consumer taking from the RIGHT end sees, in order."""
    return [x.decode() for x in reversed(cast(list[bytes], r.lrange(KEY, 0, -1)))]


def drop_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        rec.getMessage()
        for rec in caplog.records
        if rec.name == "pirus_bridge.loghandler" and "dropped" in rec.getMessage()
    ]


@pytest.fixture
def make_handler() -> Iterator[MakeHandler]:
    """Build handlers with fast test timings; every one is closed at the end of the test."""
    made: list[RedisLogHandler] = []

    def make(url: str, **kw: object) -> RedisLogHandler:
        kw.setdefault("flush_interval_s", 0.02)
        h = RedisLogHandler(url, **kw)  # type: ignore[arg-type]
        h.max_backoff_s = 0.05
        h.llen_interval_s = 0.05
        h.close_timeout_s = 0.5
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
        assert not h._thread.is_alive()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    lg = logging.getLogger("tests.loghandler.access")
    lg.setLevel(logging.INFO)
    lg.propagate = False
    yield lg
    for h in list(lg.handlers):
        lg.removeHandler(h)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of our own, to stop and start."""
    srv = RedisServer(tmp_path / "redis", appendonly=False).start()
    yield srv
    srv.stop()


@pytest.fixture
def server_client(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    yield client
    client.close()


def test_handler_consumer_sees_emit_order(
    redis_url: str, r: redis.Redis, make_handler: MakeHandler, logger: logging.Logger
) -> None:
    h = make_handler(redis_url, batch_size=7)
    logger.addHandler(h)
    lines = [f"line {i}" for i in range(100)]
    for line in lines:
        logger.info(line)
    assert h.flush(5)
    assert consumed(r) == lines
    # the consumers' own move: BLMOVE q:loglines <processing> RIGHT LEFT takes the oldest
    assert r.blmove(KEY, "q:processing:test", 1, "RIGHT", "LEFT") == b"line 0"


def test_handler_concurrent_emit_every_line_exactly_once(
    redis_url: str, r: redis.Redis, make_handler: MakeHandler, logger: logging.Logger
) -> None:
    h = make_handler(redis_url, batch_size=100, capacity=100_000)
    logger.addHandler(h)

    def work(t: int) -> None:
        for i in range(2000):
            logger.info("t%d %d", t, i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert h.flush(10)
    got = consumed(r)
    assert sorted(got) == sorted(f"t{t} {i}" for t in range(8) for i in range(2000))
    for t in range(8):  # each thread's own lines keep their order
        mine = [int(x.split()[1]) for x in got if x.startswith(f"t{t} ")]
        assert mine == list(range(2000))
    assert h.dropped == 0


def test_handler_through_logging_formatter_and_level(
    redis_url: str, r: redis.Redis, make_handler: MakeHandler, logger: logging.Logger
) -> None:
    h = make_handler(redis_url)
    logger.addHandler(h)
    logger.info("%s - - [10/Oct/2000:13:55:36 +0000] 100%% plain", "192.0.2.1")
    logger.debug("below the level: not pushed")
    h.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.warning("formatted")
    assert h.flush(5)
    assert consumed(r) == [
        "192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] 100% plain",
        "[WARNING] formatted",
    ]


def test_handler_bad_record_never_raises(
    redis_url: str,
    r: redis.Redis,
    make_handler: MakeHandler,
    logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)  # keep handleError quiet
    h = make_handler(redis_url)
    logger.addHandler(h)
    logger.info("%d", "not a number")  # formatting fails inside the handler
    logger.info("next")
    assert h.flush(5)
    assert consumed(r) == ["next"]


def test_handler_redis_down_emit_is_fast_and_nothing_is_lost(
    server: RedisServer,
    server_client: redis.Redis,
    make_handler: MakeHandler,
    logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = make_handler(server.url, batch_size=50, capacity=10_000)
    logger.addHandler(h)
    logger.info("before")
    assert h.flush(5)
    server.stop()
    lines = [f"down {i}" for i in range(5000)]
    # the handler's own cost, without logging's record building (slow on a loaded machine)
    records = [logger.makeRecord(logger.name, logging.INFO, "", 0, x, (), None) for x in lines]
    start = time.perf_counter()
    for rec in records:
        h.handle(rec)
    assert time.perf_counter() - start < 0.5
    wait_until(lambda: any("cannot push" in m for m in caplog.messages))
    assert h.buffered == 5000 and h.dropped == 0
    assert not h.flush(0.05)  # cannot succeed while Redis is away, and says so
    server.start()  # empty again: no persistence in this server
    assert h.flush(5)
    assert consumed(server_client) == lines  # all, in order, none twice
    assert h.dropped == 0 and server_client.get(DROPPED) is None
    assert drop_warnings(caplog) == []


def test_handler_beyond_capacity_drops_oldest_counts_and_reports_once(
    server: RedisServer,
    server_client: redis.Redis,
    make_handler: MakeHandler,
    logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = make_handler(server.url, batch_size=10, capacity=100)
    logger.addHandler(h)
    server.stop()
    for i in range(250):
        logger.info("line %d", i)
    wait_until(lambda: h.dropped == 150)  # settles once a failed push is requeued
    assert h.buffered == 100
    assert drop_warnings(caplog) == []  # not while Redis is away
    server.start()
    assert h.flush(5)
    assert consumed(server_client) == [f"line {i}" for i in range(150, 250)]
    assert server_client.get(DROPPED) == b"150"
    wait_until(lambda: drop_warnings(caplog))
    logger.info("later")
    assert h.flush(5)
    [warning] = drop_warnings(caplog)
    assert "dropped 150 access-log lines" in warning
    assert h.dropped == 150 and server_client.get(DROPPED) == b"150"


def test_handler_max_queue_len_stops_pushing(
    redis_url: str,
    r: redis.Redis,
    make_handler: MakeHandler,
    logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = make_handler(redis_url, batch_size=20, capacity=30, max_queue_len=50)
    logger.addHandler(h)
    for i in range(90):
        logger.info("line %d", i)
        if i in (24, 49):  # (flushing before the 30-line buffer overflows)
            assert h.flush(5)  # exactly up to the limit
    assert not h.flush(0.1)
    assert r.llen(KEY) == 50
    wait_until(lambda: h.dropped == 10 and r.get(DROPPED) == b"10")  # counted while paused
    assert r.llen(KEY) == 50
    r.delete(KEY)  # the consumers catch up
    assert h.flush(5)
    assert consumed(r) == [f"line {i}" for i in range(60, 90)]
    wait_until(lambda: drop_warnings(caplog))
    assert len(drop_warnings(caplog)) == 1


def test_handler_close_flushes_and_stops(
    redis_url: str, r: redis.Redis, logger: logging.Logger
) -> None:
    h = RedisLogHandler(redis_url, batch_size=1000, flush_interval_s=60)
    logger.addHandler(h)
    for i in range(10):
        logger.info("line %d", i)
    h.close()
    assert consumed(r) == [f"line {i}" for i in range(10)]
    assert not h._thread.is_alive()
    h.close()  # idempotent
    logger.info("after close")  # counted, never raised
    assert h.dropped == 1


def test_handler_ignores_its_own_warnings_on_the_root_logger(
    server: RedisServer,
    server_client: redis.Redis,
    make_handler: MakeHandler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = make_handler(server.url)
    root = logging.getLogger()
    root.addHandler(h)
    try:
        server.stop()
        logging.getLogger("tests.loghandler.app").warning("app line")
        wait_until(lambda: any("cannot push" in m for m in caplog.messages))
        server.start()
        assert h.flush(5)
    finally:
        root.removeHandler(h)
    assert consumed(server_client) == ["app line"]


def test_handler_works_in_a_forked_child(
    redis_url: str, r: redis.Redis, make_handler: MakeHandler, logger: logging.Logger
) -> None:
    """gunicorn --preload forks after the app (and its handler) is set up."""
    h = make_handler(redis_url)
    logger.addHandler(h)
    logger.info("parent")
    assert h.flush(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            logger.info("child")
            code = 0 if h.flush(5) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert consumed(r) == ["parent", "child"]


def test_handler_needs_url_or_client() -> None:
    with pytest.raises(ValueError):
        RedisLogHandler()
    with pytest.raises(ValueError):
        RedisLogHandler("redis://127.0.0.1:1/0", capacity=0)


def test_handler_with_given_client_leaves_it_open(redis_url: str, r: redis.Redis) -> None:
    h = RedisLogHandler(client=r)
    h.handle(logging.makeLogRecord({"msg": "x", "levelno": logging.INFO}))
    h.close()
    assert r.rpop(KEY) == b"x"  # still usable


def test_main_pushes_stdin_lines(redis_url: str, r: redis.Redis) -> None:
    lines = [
        b'192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] "GET /1/ HTTP/1.1" 200 5 "-" "a"',
        b"x\xff",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pirus_bridge.loghandler", "--url", redis_url],
        input=b"\n".join(lines) + b"\r\n\n",
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert list(reversed(r.lrange(KEY, 0, -1))) == lines  # bytes kept exactly


def test_main_flushes_on_sigterm(redis_url: str, r: redis.Redis) -> None:
    """Apache stops its piped loggers with SIGTERM: the reader exits cleanly (code 0)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pirus_bridge.loghandler", "--url", redis_url],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(b"one\ntwo\n")
    proc.stdin.flush()
    wait_until(lambda: r.llen(KEY) == 2, timeout=15)
    proc.terminate()
    assert proc.wait(15) == 0, proc.stderr.read()
    proc.stdin.close()
    proc.stderr.close()
    assert consumed(r) == ["one", "two"]


ENVIRON = {
    "REMOTE_ADDR": "2001:db8::1",
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/id/eprint/1234/1/caf\u00c3\u00a9 paper.pdf",  # UTF-8 bytes as latin-1 (PEP 3333)
    "QUERY_STRING": "a=1&b=2",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_REFERER": 'https://example.org/?q="x"',
    "HTTP_USER_AGENT": "Mozilla/5.0 (caf\u00c3\u00a9) \\o/",
}


@pytest.mark.parametrize(
    ("environ", "status", "size", "url", "want_size"),
    [
        (ENVIRON, "200 OK", 2326, "/id/eprint/1234/1/caf%C3%A9%20paper.pdf?a=1&b=2", 2326),
        ({**ENVIRON, "REQUEST_URI": "/raw%20uri?x"}, 304, 0, "/raw%20uri?x", None),
        ({"REMOTE_ADDR": "192.0.2.7", "PATH_INFO": "/"}, 404, None, "/", None),
    ],
)
def test_access_line_parses_back_as_combined(
    environ: dict[str, str], status: int | str, size: int | None, url: str, want_size: int | None
) -> None:
    line = access_line(environ, status, size, when=971186136.0)
    rec = LogFormat.compile("combined").parse(line)
    assert rec is not None, line
    assert (rec.ip, rec.ts, rec.method, rec.url, rec.protocol) == (
        environ["REMOTE_ADDR"], 971186136, "GET", url, "HTTP/1.1",
    )  # fmt: skip
    assert (rec.status, rec.size) == (int(str(status)[:3]), want_size)
    ua = environ.get("HTTP_USER_AGENT", "").encode("latin-1").decode()
    referer = environ.get("HTTP_REFERER", "")
    assert (rec.referer, rec.user_agent) == (referer, ua)
    assert "[10/Oct/2000:13:55:36 +0000]" in line
