"""A Matomo-style bulk tracking endpoint on 127.0.0.1, for tests and the benchmark.

It takes what OpenAIRE UsageCounts takes: ``POST`` of ``{"requests": ["?idsite=…&rec=1&…", …],
"token_auth": "…"}``, and answers as Matomo does: ``{"status": "success", "tracked": n,
"invalid": k, "invalid_indices": […]}`` on success; on a failure a 4xx or 5xx with the number
of requests ``tracked`` before it stopped. What it records as tracked is what Matomo would have
stored, so "every event exactly once" is a check on :attr:`MatomoEndpoint.tracked`.

Behaviour, per POST, in this order: a bad or missing ``token_auth`` → 400 "not authenticated";
a planned outcome (:meth:`MatomoEndpoint.plan`); a storm (``storm`` = share of POSTs that fail
with a 500 after tracking a random part); requests whose ``idsite`` is not the site's → invalid.

``python -m tests.matomo_endpoint [--token T] [--site 1]`` serves until interrupted, counting
but not keeping or reading the tracking requests (so it does not check their ``idsite``), and
prints its URL (the benchmark's bulk endpoint).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from tests.gatherer import Gatherer, ReceivedRequest, Reply

TOKEN = "0123456789abcdef0123456789abcdef"  # a 32-character token_auth, as Matomo issues


@dataclass(frozen=True)
class Outcome:
    """A planned answer to one POST: ``status`` after tracking the first ``tracked`` requests
    (``None``: all of them), and the indices it calls invalid."""

    status: int = 200
    tracked: int | None = None
    invalid: tuple[int, ...] = ()


Event = tuple[tuple[str, str], ...]  # one tracking request's parameters, in order


class MatomoEndpoint:
    """The endpoint; use as a context manager. :attr:`url` is its ``…/matomo.php``."""

    def __init__(self, *, token: str = TOKEN, site: str = "1", storm: float = 0.0,
                 seed: int = 7, record: bool = True) -> None:
        self.token = token
        self.site = site
        self.storm = storm
        self.record = record
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._plan: list[Outcome] = []
        self.tracked: Counter[Event] = Counter()  # what Matomo stored, and how often
        self.posts: list[list[str]] = []  # the request lists received, POST by POST
        self.answers: list[int] = []  # the status of each answer
        self.count = 0  # requests tracked (kept even without recording)
        self.gatherer = Gatherer("/matomo.php", record=False, answer=self._answer)

    def __enter__(self) -> MatomoEndpoint:
        self.gatherer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gatherer.stop()

    @property
    def url(self) -> str:
        return self.gatherer.url

    def plan(self, outcomes: Iterable[Outcome]) -> None:
        """Answer the next POSTs so, one outcome each, before the usual behaviour resumes."""
        with self._lock:
            self._plan += list(outcomes)

    def events(self) -> Counter[Event]:
        with self._lock:
            return Counter(self.tracked)

    def _answer(self, request: ReceivedRequest) -> Reply:
        try:
            data = json.loads(request.body)
            requests = data["requests"]
            assert isinstance(requests, list)
        except (ValueError, KeyError, AssertionError):
            return _json(400, {"status": "error", "tracked": 0, "message": "not a bulk request"})
        with self._lock:
            if self.record:
                self.posts.append(list(requests))
            if data.get("token_auth") != self.token:
                self.answers.append(400)
                return _json(400, {"status": "error", "tracked": 0, "message":
                                   "Not authenticated: the token_auth is not valid"})
            outcome = self._plan.pop(0) if self._plan else None
            if outcome is None and self.storm and self._random.random() < self.storm:
                outcome = Outcome(500, self._random.randrange(len(requests) + 1))
            outcome = outcome or Outcome()
            tracked = len(requests) if outcome.tracked is None else outcome.tracked
            invalid = set(outcome.invalid)
            if not self.record:  # the benchmark's endpoint: count, as cheaply as it can
                self.count += tracked - len(invalid)
                self.answers.append(outcome.status)
                requests = []
            for i, query in enumerate(requests[:tracked]):
                params = tuple(parse_qsl(query.lstrip("?"), keep_blank_values=True))
                if dict(params).get("idsite") != self.site:
                    invalid.add(i)
                if i in invalid:
                    continue
                self.count += 1
                self.tracked[params] += 1
            if self.record:
                self.answers.append(outcome.status)
        if outcome.status >= 300:
            return _json(outcome.status, {"status": "error", "tracked": tracked,
                                          "message": "Internal error while tracking"})
        return _json(outcome.status, {"status": "success", "tracked": tracked - len(invalid),
                                      "invalid": len(invalid),
                                      "invalid_indices": sorted(invalid)})


def _json(status: int, data: dict[str, object]) -> Reply:
    return Reply(status, {"Content-Type": "application/json"}, json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--site", default="1")
    args = parser.parse_args()
    endpoint = MatomoEndpoint(token=args.token, site=args.site, record=False)
    with endpoint:
        print(endpoint.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
