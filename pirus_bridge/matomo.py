"""Matomo bulk tracking, as OpenAIRE UsageCounts takes it (SPEC §3, profile ``matomo``): pure.

One POST carries up to ``batch_size`` tracking requests, in the order they happened:
``{"requests": ["?idsite=…&rec=1&…", …], "token_auth": "…"}``. The token travels only in this
body, never in a URL, so nothing that logs URLs (ours or a proxy's) sees it.

Matomo answers a bulk request with JSON. On success (2xx): ``{"status": "success", "tracked": n,
"invalid": k}``, and since Matomo 2.15 ``invalid_indices`` names the requests it refused as
invalid. On failure (4xx or 5xx) it stops at the request that failed, and ``tracked`` says how
many were recorded before it: those must not be sent again, the rest may. Some set-ups (the
QueuedTracking plugin) answer a 2xx with an image or nothing: every request is then taken as
recorded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

CONTENT_TYPE = "application/json"


def bulk_body(requests: Sequence[str], token: str | None) -> bytes:
    """The JSON body of one bulk POST."""
    data: dict[str, object] = {"requests": list(requests)}
    if token:
        data["token_auth"] = token
    return json.dumps(data, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class BulkOutcome:
    """What became of the requests of one bulk POST: how many leading ones were recorded
    (``tracked``), and which of those Matomo refused as invalid."""

    tracked: int
    invalid: frozenset[int] = frozenset()
    message: str = ""  # Matomo's own words on a failure, when it gave any


def read_answer(status: int, body: bytes, sent: int) -> BulkOutcome:
    """Interpret Matomo's answer to a bulk POST of ``sent`` requests.

    A 2xx records them all but the ``invalid_indices``; a failure records the first
    ``tracked`` (none when the answer does not say: nothing is lost by sending them again
    except, at worst, a duplicate, while dropping them could lose them).
    """
    data = _json_object(body)
    ok = 200 <= status < 300
    message = str(data.get("message", ""))[:300] if not ok else ""
    if ok:
        invalid = data.get("invalid_indices")
        indices = frozenset(
            i for i in invalid if isinstance(i, int) and 0 <= i < sent
        ) if isinstance(invalid, list) else frozenset()
        return BulkOutcome(sent, indices)
    tracked = data.get("tracked")
    if isinstance(tracked, bool) or not isinstance(tracked, int):
        tracked = 0
    return BulkOutcome(min(max(tracked, 0), sent), frozenset(), message)


def _json_object(body: bytes) -> dict[str, object]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
