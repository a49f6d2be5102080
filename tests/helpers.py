"""Small builders shared by tests: configs, log lines, Redis snapshots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from pirus_bridge.config import Config, parse_config

ROOT = Path(__file__).resolve().parent.parent

PERSON = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
OTHER_PERSON = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15"
ROBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def make_config(redis_url: str | None, **sections: Any) -> Config:
    """A valid config for the shipped EPrints mapping; ``sections`` replace or add sections."""
    return parse_config(config_data({"url": redis_url} if redis_url else None, **sections),
                        base=ROOT)


def config_data(redis_section: dict[str, Any] | None, *,
                mapping: str = "mappings/eprints3.yaml", **sections: Any) -> dict[str, Any]:
    """The raw config behind :func:`make_config`: ``sections`` replace or add sections, a
    ``counting`` section is merged with the default one."""
    data: dict[str, Any] = {
        "redis": redis_section,
        "repository": {
            "host": "eprints.example.ac.uk",
            "base_url": "https://eprints.example.ac.uk",
            "mapping": mapping,
        },
        "counting": {"salt": "test-salt", "batch_size": 50},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return {k: v for k, v in data.items() if v is not None}


def clf(
    when: str,
    path: str,
    *,
    ip: str = "192.0.2.10",
    ua: str = PERSON,
    status: int = 200,
    method: str = "GET",
    ref: str = "-",
) -> str:
    """A combined-format line; ``when`` is ``DD/Mon/YYYY:HH:MM:SS +ZZZZ``."""
    return f'{ip} - - [{when}] "{method} {path} HTTP/1.1" {status} 1234 "{ref}" "{ua}"\n'


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


def snapshot(r: redis.Redis, patterns: tuple[str, ...] = ("c:*", "dly:*", "u:*", "t:*",
                                                         "d[vd]:*", "objectitems")) -> dict:
    """Every counting key and its value, to compare two runs (pipelined: live tests compare
    tens of thousands of keys)."""
    names = sorted({k for p in patterns for k in r.scan_iter(match=p, count=1000)})
    pipe = r.pipeline(transaction=False)
    for k in names:
        pipe.type(k)
    kinds = [t.decode() for t in pipe.execute()]
    fetch = {"hash": pipe.hgetall, "set": pipe.smembers, "string": pipe.get,
             "zset": lambda k: pipe.zrange(k, 0, -1)}
    kept = [(k, kind) for k, kind in zip(names, kinds, strict=True) if kind in fetch]
    for k, kind in kept:
        fetch[kind](k)
    out: dict[str, Any] = {}
    for (k, kind), v in zip(kept, pipe.execute(), strict=True):
        if kind == "hash" and k.endswith(b":msg"):  # message bodies, without their enqueue time
            out[k.decode()] = {f.decode(): _without_enqueue_time(x) for f, x in v.items()}
        elif kind == "hash":
            out[k.decode()] = {f.decode(): x.decode() for f, x in v.items()}
        elif kind == "string":
            out[k.decode()] = v.decode()
        else:
            out[k.decode()] = sorted(m.decode() for m in v)
    return out


def _without_enqueue_time(body: bytes) -> str:
    """A message body as it compares across runs: ``q`` (when it was enqueued) left out."""
    import json

    data = json.loads(body)
    data.pop("q", None)
    return json.dumps(data, sort_keys=True)


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
