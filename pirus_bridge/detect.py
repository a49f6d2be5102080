"""``mapping detect``: which shipped mapping fits a sample of a site's log (pure).

The lines that could be item usage are the "item-like" ones: GET, status 200 or 304, not a
robot's, and not a static asset (style sheets, scripts, images and fonts outside any item
path), a challenge page or ``robots.txt``. For each candidate mapping, its share is the part of
those lines one of its usage rules recognises. The best mapping's uncovered lines (no rule at
all, usage or ignore, matched them) are grouped by URL shape, numbers and UUIDs replaced by
``{n}`` and ``{uuid}`` and the query dropped, most frequent first: what a site's own rules must
still say. Lines a rule turned down on purpose (an ``ignore`` rule, an ``exclude``) are covered.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from collections.abc import Mapping as MappingOf
from dataclasses import dataclass, field
from typing import Any

from pirus_bridge.classify import is_challenge
from pirus_bridge.logparse import LogRecord
from pirus_bridge.mapping import Mapping, request_path
from pirus_bridge.robots import RobotDetector

_ASSET = re.compile(
    r"\.(?:css|js|mjs|map|png|gif|ico|svg|woff2?|ttf|eot|webp|jpe?g)(?:\?|$)|^/robots\.txt$",
    re.IGNORECASE,
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBER = re.compile(r"(?<![A-Za-z])\d+(?:\.\d+)*(?![A-Za-z])")


def url_shape(url: str) -> str:
    """``/handle/123456789/42?show=full`` → ``/handle/{n}/{n}``."""
    path = (request_path(url) or url).partition("?")[0]
    return _NUMBER.sub("{n}", _UUID.sub("{uuid}", path))


@dataclass
class Fit:
    """How much of the sample one mapping recognises."""

    mapping: str
    recognised: int
    ignored: int  # lines an ignore rule or an exclude of this mapping claims (known, not usage)
    share: float


@dataclass
class Detection:
    lines: int = 0
    parsed: int = 0
    candidates: int = 0
    fits: list[Fit] = field(default_factory=list)
    uncovered: list[tuple[str, int, str]] = field(default_factory=list)  # shape, count, example

    @property
    def best(self) -> Fit | None:
        return self.fits[0] if self.fits and self.fits[0].recognised else None

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "lines": self.lines,
            "parsed": self.parsed,
            "item_like": self.candidates,
            "mappings": [{"mapping": f.mapping, "share": round(f.share, 4),
                          "recognised": f.recognised, "ignored": f.ignored}
                         for f in self.fits],  # fmt: skip
            "best": best.mapping if best else None,
            "uncovered": [{"shape": s, "count": n, "example": ex}
                          for s, n, ex in self.uncovered],  # fmt: skip
        }


def is_item_like(rec: LogRecord, robots: RobotDetector, user_agent_logged: bool = True) -> bool:
    """Could this line be usage of an item, whatever the mapping? (See the module docstring.)"""
    if rec.method != "GET" or rec.status not in (200, 304):
        return False
    if (user_agent_logged and robots.agent_source(rec.user_agent)) or robots.ip_source(rec.ip):
        return False
    return not (_ASSET.search(rec.url) or is_challenge(rec.url))


def detect(
    records: Iterable[LogRecord | None],
    mappings: MappingOf[str, Mapping],
    robots: RobotDetector,
    *,
    user_agent_logged: bool = True,
    top: int = 15,
) -> Detection:
    """Score every mapping on the item-like lines of ``records``; shapes the best one misses."""
    out = Detection()
    urls: Counter[str] = Counter()
    for rec in records:
        out.lines += 1
        if rec is None:
            continue
        out.parsed += 1
        if is_item_like(rec, robots, user_agent_logged):
            urls[rec.url] += 1
    out.candidates = sum(urls.values())
    uncovered_by: dict[str, Counter[str]] = {}
    for name, mapping in mappings.items():
        recognised = ignored = 0
        missed: Counter[str] = Counter()
        for url, n in urls.items():
            if mapping.match(url) is not None:
                recognised += n
            elif mapping.explain(url).considered:
                ignored += n
            else:
                missed[url] = n
        share = recognised / out.candidates if out.candidates else 0.0
        out.fits.append(Fit(name, recognised, ignored, share))
        uncovered_by[name] = missed
    out.fits.sort(key=lambda f: (-f.recognised, -f.ignored, f.mapping))
    if out.fits:
        shapes: Counter[str] = Counter()
        example: dict[str, str] = {}
        for url, n in uncovered_by[out.fits[0].mapping].items():
            shape = url_shape(url)
            shapes[shape] += n
            example.setdefault(shape, url)
        out.uncovered = [(s, n, example[s]) for s, n in shapes.most_common(top)]
    return out
