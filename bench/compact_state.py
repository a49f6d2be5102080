"""A prototype of the compact persistent encoding planned in ``docs/redis-model.md`` ("Redis
Cluster: the plan"), for ``bench/bench_memory.py`` to measure. Not used by pirus-bridge.

The same facts as the seed-shaped keys ``c:``, ``dly:``, ``dv:``, ``dd:``, ``t:views:`` and
``t:dls:`` of an item, in ONE small hash per item and year, tagged with the item:

``c:{item}:YYYY``  field ``MM``: the month's COUNTER metrics TII, UII, TIR, UIR and DC, five
                   varints (7 bits a byte); field ``MM:v`` / ``MM:d``: the month's daily-unique
                   views / downloads with their date sets — the days with usage as bytes, each
                   the day of the month (1–31) then the day's count as a varint; field ``t``:
                   the year's share of the totals ``t:views`` and ``t:dls``, two varints (the
                   all-time totals are the sum over the years)
``objectitems``    set of item ids, as now
``years``          set of the years with usage (so readers know which hashes to read)

``dv:{item}`` / ``dd:{item}`` are exactly the days listed under ``MM:v`` / ``MM:d``, and
``dly:{item}`` their counts, so they need no key of their own. A year holds at most 37 fields
and a month's day list 31 × 2 bytes while counts stay below 128 a day: inside the default
listpack limits (``hash-max-listpack-entries`` 128, ``hash-max-listpack-value`` 64), so Redis
keeps each hash as one small allocation. Only the busiest items' long months pass 64 bytes; Redis
then stores that item-year as a plain hash, which their many item-days pay for.
"""

from __future__ import annotations

from collections import defaultdict

import redis

from pirus_bridge.keys import day_of_number

CHUNK = 500
CODES = ("TII", "UII", "TIR", "UIR", "DC")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def pack_days(days: dict[int, int]) -> bytes:
    """``{day of month: count}`` → day byte + varint count, by day."""
    return b"".join(bytes([d]) + varint(n) for d, n in sorted(days.items()) if n)


def unpack_days(data: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    i = 0
    while i < len(data):
        day = data[i]
        i += 1
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out[day] = n
    return out


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _seed_facts(pipe_replies: list) -> tuple[dict, dict, set, set, int, int]:
    metrics, dly, dv, dd, tv, td = pipe_replies
    return ({_text(k): int(v) for k, v in metrics.items()},
            {_text(k): int(v) for k, v in dly.items()},
            {day_of_number(m) for m in dv}, {day_of_number(m) for m in dd}, int(tv or 0),
            int(td or 0))


def _read_seed(r: redis.Redis, items: list[str]) -> list[tuple[dict, dict, set, set, int, int]]:
    pipe = r.pipeline(transaction=False)
    for item in items:
        tag = "{" + item + "}"
        pipe.hgetall(f"c:{tag}")
        pipe.hgetall(f"dly:{tag}")
        pipe.smembers(f"dv:{tag}")
        pipe.smembers(f"dd:{tag}")
        pipe.get(f"t:views:{tag}")
        pipe.get(f"t:dls:{tag}")
    replies = pipe.execute()
    return [_seed_facts(replies[i:i + 6]) for i in range(0, len(replies), 6)]


def pack(values: list[int]) -> bytes:
    return b"".join(varint(n) for n in values)


def unpack(data: bytes) -> list[int]:
    out, n, shift = [], 0, 0
    for b in data:
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            out.append(n)
            n = shift = 0
    return out


def encode(item: str, metrics: dict[str, int],
           dly: dict[str, int]) -> dict[str, dict[str, bytes]]:
    """The compact hashes of one item: key → fields."""
    tag = "{" + item + "}"
    months: dict[str, list[int]] = defaultdict(lambda: [0] * len(CODES))
    for field, n in metrics.items():
        month, _, code = field.partition(":")  # YYYY-MM:<code>
        months[month][CODES.index(code)] = n
    series: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for field, n in dly.items():
        day, _, kind = field.partition(":")  # YYYY-MM-DD:v|d
        series[day[:7], kind][int(day[8:])] = n
        totals[day[:4]][0 if kind == "v" else 1] += n
    out: dict[str, dict[str, bytes]] = defaultdict(dict)
    for month, values in months.items():
        if any(values):
            out[f"c:{tag}:{month[:4]}"][month[5:]] = pack(values)
    for (month, kind), days in series.items():
        out[f"c:{tag}:{month[:4]}"][f"{month[5:]}:{kind}"] = pack_days(days)
    for year, pair in totals.items():
        out[f"c:{tag}:{year}"]["t"] = pack(pair)
    return out


def decode(item: str, hashes: dict[str, dict[str, bytes]]) -> tuple[dict, dict, set, set,
                                                                    int, int]:
    """The seed-shaped facts back from an item's compact hashes."""
    metrics: dict[str, int] = {}
    dly: dict[str, int] = {}
    dv: set[str] = set()
    dd: set[str] = set()
    views = downloads = 0
    for key, fields in hashes.items():
        year = key.rsplit(":", 1)[1]
        for field, value in fields.items():
            if field == "t":
                v, d = unpack(value)
                views, downloads = views + v, downloads + d
            elif ":" not in field:
                for code, n in zip(CODES, unpack(value), strict=True):
                    if n:
                        metrics[f"{year}-{field}:{code}"] = n
            else:
                month, _, kind = field.partition(":")
                for day, n in unpack_days(value).items():
                    date = f"{year}-{month}-{day:02d}"
                    dly[f"{date}:{kind}"] = n
                    (dv if kind == "v" else dd).add(date)
    return metrics, dly, dv, dd, views, downloads


def _items(r: redis.Redis) -> list[str]:
    return sorted(_text(m) for m in r.smembers("objectitems"))


def encode_all(src: redis.Redis, dst: redis.Redis) -> None:
    """Write every item's compact hashes, ``objectitems`` and ``years`` into ``dst`` (emptied
    first)."""
    dst.flushdb()
    items = _items(src)
    for i in range(0, len(items), CHUNK):
        chunk = items[i:i + CHUNK]
        pipe = dst.pipeline(transaction=False)
        years: set[str] = set()
        for item, (metrics, dly, *_rest) in zip(chunk, _read_seed(src, chunk), strict=True):
            for key, fields in encode(item, metrics, dly).items():
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                years.add(key.rsplit(":", 1)[1])
        pipe.sadd("objectitems", *chunk)
        if years:
            pipe.sadd("years", *years)
        pipe.execute()


def check_all(src: redis.Redis, dst: redis.Redis) -> int:
    """How many items' facts, read back from ``dst`` as a reader would (each year in ``years``),
    differ from the seed-shaped keys."""
    items = _items(src)
    years = sorted(_text(y) for y in dst.smembers("years"))
    bad = 0
    for i in range(0, len(items), CHUNK):
        chunk = items[i:i + CHUNK]
        pipe = dst.pipeline(transaction=False)
        for item in chunk:
            for y in years:
                pipe.hgetall(f"c:{{{item}}}:{y}")
        replies = iter(pipe.execute())
        for item, facts in zip(chunk, _read_seed(src, chunk), strict=True):
            hashes = {f"c:{{{item}}}:{y}": {_text(f): v for f, v in next(replies).items()}
                      for y in years}
            metrics, dly, dv, dd, views, downloads = facts
            expected = ({k: n for k, n in metrics.items() if n},
                        {k: n for k, n in dly.items() if n}, dv, dd, views, downloads)
            if decode(item, {k: h for k, h in hashes.items() if h}) != expected:
                bad += 1
    return bad
