"""Shared by the COUNTER R5.1 tests: a counted log over three months, item metadata, the API
served by a real HTTP server, and the project's own checks of the IR's shape (which hold
whether or not COUNTER's API description is at hand)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from pirus_bridge import keys
from pirus_bridge.config import Config
from pirus_bridge.ingest import Ingester
from pirus_bridge.web import WebContext, create_app
from pirus_bridge.web.server import HttpServer
from tests.helpers import OTHER_PERSON, clf, make_config, write_log

KEY = "r51-test-key-6d1f0c2a"
OTHER_KEY = "r51-second-key-93be"
WORLD = "0000000000000000"
# 2026-12-02 12:00 UTC: September and October 2026 are closed; November closes (48 h after its
# end) on 2026-12-03 00:00.
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
A, B, C, D = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"


def at(when: str) -> str:
    return f"{when} +0000"


LOG = [
    clf(at("09/Sep/2026:10:00:00"), "/1234/", ip=A),
    clf(at("30/Sep/2026:23:50:00"), "/102/", ip=D),
    clf(at("03/Oct/2026:09:00:00"), "/1234/", ip=A),
    clf(at("03/Oct/2026:09:00:20"), "/1234/", ip=A),  # double-click
    clf(at("03/Oct/2026:09:05:00"), "/1234/1/paper.pdf", ip=A),
    clf(at("03/Oct/2026:09:30:00"), "/1234/", ip=B, ua=OTHER_PERSON),
    clf(at("03/Oct/2026:10:15:00"), "/1234/1/paper.pdf", ip=A),
    clf(at("04/Oct/2026:12:00:00"), "/101/1/thesis.pdf", ip=C),
    clf(at("02/Nov/2026:08:00:00"), "/1234/", ip=B, ua=OTHER_PERSON),
]
# Item 1234 by hand, October: TII = views 09:00, B 09:30 + downloads 09:05, 10:15 = 4;
# UII = sessions A|09, B|09, A|10 = 3; TIR = 2; UIR = A|09, A|10 = 2.
OCT_1234 = {"Total_Item_Investigations": 4, "Unique_Item_Investigations": 3,
            "Total_Item_Requests": 2, "Unique_Item_Requests": 2}

METADATA = {
    "1234": {"item": "1234", "oai_identifier": "oai:eprints.example.ac.uk:1234",
             "title": "Counting  repository\tusage", "doi": "10.5555/r51.1234",
             "types": ["Article", "info:eu-repo/semantics/acceptedVersion"],
             "dates": ["2019-05-03", "2020"], "creators": ["Smith, Jane", "Doe, John"],
             "publishers": ["University of Example"]},
    "101": {"item": "101", "oai_identifier": "oai:eprints.example.ac.uk:101",
            "title": "A thesis", "types": ["Thesis"], "dates": ["2021"]},
    # 102 has no metadata record: only the OAI identifier the mapping found.
}


def count_log(tmp_path: Path, r: redis.Redis, redis_url: str) -> Config:
    """Ingest :data:`LOG` through the whole chain, then cache the items' metadata records as
    the metadata provider does (``md:{item}``: ``title``, ``doi``, ``json``)."""
    cfg = make_config(redis_url, gatherers=None)
    Ingester(cfg, r).ingest(str(write_log(tmp_path / "access.log", LOG)))
    for item, md in METADATA.items():
        r.hset(keys.metadata(item), mapping={"title": md["title"], "doi": md.get("doi", ""),
                                             "status": "ok", "json": json.dumps(md)})
    return cfg


@dataclass
class Api:
    """The COUNTER API of one config, served on 127.0.0.1 by a real HttpServer."""

    server: HttpServer
    clock: list[float]

    @property
    def base(self) -> str:
        return f"{self.server.scheme}://127.0.0.1:{self.server.port}/r51"

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(self.base + path, params=params, timeout=10)

    def ir(self, **params: str) -> requests.Response:
        query = {"customer_id": WORLD, "api_key": KEY, **params}
        return self.get("/reports/ir", **query)


def api_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """For a ``serve_api`` fixture: ``serve_api(cfg, r)`` starts the app on a free port with
    the clock at :data:`NOW` (``api.clock[0]`` moves it); every server started is stopped at
    the end."""
    monkeypatch.setenv("PIRUS_BRIDGE_COUNTER_API_KEYS", f" {KEY} ,{OTHER_KEY}")
    started: list[HttpServer] = []

    def start(cfg: Config, r: redis.Redis) -> Api:
        clock = [NOW.timestamp()]
        server = HttpServer(create_app(WebContext(cfg, r, clock=lambda: clock[0])), cfg.http)
        server.start()
        started.append(server)
        return Api(server, clock)

    yield start
    for server in started:
        server.stop()


def http_config(redis_url: str, **sections: Any) -> Config:
    return make_config(redis_url, gatherers=None, http={"listen": "127.0.0.1:0"}, **sections)


# --- the project's own checks of an IR ----------------------------------------------------------

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def assert_ir_shape(report: dict[str, Any]) -> None:
    """What an R5.1 IR must look like, checked without COUNTER's schema: the header's required
    elements and constants, one object per item with its required elements, and only non-zero
    counts keyed by month."""
    assert set(report) == {"Report_Header", "Report_Items"}
    h = report["Report_Header"]
    for name in ("Report_Name", "Report_ID", "Release", "Institution_Name", "Institution_ID",
                 "Report_Filters", "Created", "Created_By", "Registry_Record"):
        assert name in h, name
    assert (h["Report_Name"], h["Report_ID"], h["Release"]) == ("Item Report", "IR", "5.1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["Created"])
    dt.date.fromisoformat(h["Report_Filters"]["Begin_Date"])
    dt.date.fromisoformat(h["Report_Filters"]["End_Date"])
    for e in h.get("Exceptions", []):
        assert set(e) <= {"Code", "Message", "Data"} and isinstance(e["Code"], int)
    for group in report["Report_Items"]:
        assert set(group) == {"Items"} and group["Items"]
        for item in group["Items"]:
            for name in ("Item", "Publisher", "Platform", "Attribute_Performance"):
                assert name in item, name
            assert item["Item_ID"], "an item without identifiers"
            for ap in item["Attribute_Performance"]:
                assert ap["Data_Type"] and ap["Performance"]
                for counts in ap["Performance"].values():
                    assert counts and all(MONTH.match(k) and n > 0 for k, n in counts.items())


def items_by_proprietary(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["Item_ID"]["Proprietary"]: item
            for group in report["Report_Items"] for item in group["Items"]}


def exception_codes(report: dict[str, Any]) -> list[int]:
    return [e["Code"] for e in report["Report_Header"].get("Exceptions", [])]
