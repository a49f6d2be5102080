"""The values that flow between pipeline stages: metric types and usage events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MetricType(StrEnum):
    """COUNTER R5 metric types a repository URL can carry (the ``rft_dat`` values of IRUS)."""

    INVESTIGATION = "Investigation"  # item page / metadata view
    REQUEST = "Request"  # full-text download

    @property
    def code(self) -> str:
        """One-letter code used inside Redis keys."""
        return "I" if self is MetricType.INVESTIGATION else "R"

    @classmethod
    def parse(cls, text: str) -> MetricType:
        """Accept ``investigation`` / ``request`` in any case (as written in YAML)."""
        for member in cls:
            if member.value.lower() == text.strip().lower():
                return member
        raise ValueError(f"unknown metric type {text!r}: use investigation or request")


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """A real person's view or download of a repository item, ready to be counted.

    ``ts`` is the event time in epoch seconds (UTC). ``url`` is the absolute URL that goes into
    ``svc_dat``: the item page for an Investigation, the file for a Request. ``line`` is the
    log line's identity (``counter.Hasher.line_id``): a line read twice is counted once.
    ``resolve`` names what the metadata provider must settle before the event is counted (a
    DSpace bitstream's item, whether a file is its document's main file …; ``pirus_bridge.
    parking``).
    """

    ts: int
    item: str
    oai_identifier: str | None
    metric: MetricType
    url: str
    ip: str
    user_agent: str
    referer: str
    status: int
    session: str | None = None
    rule: str = ""
    line: str = ""
    resolve: str = ""  # what the metadata provider must decide first (mapping.Resolve), or ""
