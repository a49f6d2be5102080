"""``mapping detect``: the best-fitting shipped mapping and the URL shapes it misses."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pirus_bridge.cli import cli
from pirus_bridge.detect import detect, url_shape
from pirus_bridge.logparse import LogFormat
from pirus_bridge.mapping import Mapping
from pirus_bridge.robots import RobotDetector
from tests.conftest import MAPPINGS
from tests.helpers import ROBOT, clf, write_log

U = "3f2b8c1e-6a4d-4b7e-9c0a-1d2e3f4a5b6c"
B = "9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a"
WHEN = "14/Oct/2026:10:00:00 +0000"


def dspace7_sample() -> list[str]:
    lines = [clf(WHEN, f"/items/{U}", ip=f"192.0.2.{i}") for i in range(1, 7)]
    lines += [clf(WHEN, f"/server/api/core/bitstreams/{B}/content", ip=f"192.0.2.{i}")
              for i in range(1, 4)]  # fmt: skip
    lines += [clf(WHEN, f"/collections/{U}?cp.page=2", ip=f"192.0.2.{i}") for i in range(1, 4)]
    lines += [clf(WHEN, "/communities/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")]
    lines += [clf(WHEN, f"/items/{U}/edit")]  # an ignore rule: covered, not usage
    lines += [clf(WHEN, "/assets/images/logo.svg"), clf(WHEN, "/main.4f3e.js"),
              clf(WHEN, f"/items/{U}", ua=ROBOT), clf(WHEN, "/search?q=x", status=500)]
    return lines


def test_detect_scores_each_mapping_and_lists_uncovered_shapes() -> None:
    mappings = {p.name: Mapping.load(p, host="h", base_url="https://h")
                for p in sorted(MAPPINGS.glob("*.yaml"))}  # fmt: skip
    parse = LogFormat.compile("combined").parse
    found = detect((parse(x.rstrip("\n")) for x in dspace7_sample()), mappings, RobotDetector())
    assert (found.lines, found.candidates) == (18, 14)
    best = found.best
    assert best is not None and best.mapping == "dspace7.yaml"
    assert (best.recognised, best.ignored) == (9, 1)
    assert round(best.share, 3) == round(9 / 14, 3)
    assert {f.mapping: f.recognised for f in found.fits}["eprints3.yaml"] == 0
    assert found.uncovered == [
        ("/collections/{uuid}", 3, f"/collections/{U}?cp.page=2"),
        ("/communities/{uuid}", 1, "/communities/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
    ]


def test_detect_url_shapes() -> None:
    assert url_shape("/handle/20.500.12345/42?show=full") == "/handle/{n}/{n}"
    assert url_shape("https://x.org/view/year/2020.html") == "/view/year/{n}.html"
    assert url_shape(f"/bitstreams/{B}/download") == "/bitstreams/{uuid}/download"
    assert url_shape("/1234/1/paper2.pdf") == "/{n}/{n}/paper2.pdf"


def test_mapping_detect_command_json(tmp_path: Path) -> None:
    log = write_log(tmp_path / "access.log", dspace7_sample())
    config = tmp_path / "none.yaml"  # no config: placeholder host, default lists
    result = CliRunner().invoke(cli, ["--config", str(config), "mapping", "detect", "--json",
                                      str(log)])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["best"] == "dspace7.yaml" and doc["item_like"] == 14
    assert doc["uncovered"][0] == {"shape": "/collections/{uuid}", "count": 3,
                                   "example": f"/collections/{U}?cp.page=2"}
    text = CliRunner().invoke(cli, ["--config", str(config), "mapping", "detect", str(log)])
    assert "best fit: dspace7.yaml" in text.output and "/collections/{uuid}" in text.output
