"""COUNTER's own R5.1 API description, for validating what the COUNTER API serves.

``COUNTER_API.json`` (OpenAPI 3.1, JSON Schema 2020-12 models) is read from ``shared/counter-r51/``
beside the repository (see the README there); it is never copied into the project. Where it is
absent, :func:`schema` skips the calling test with a clear message.

Two corrections that COUNTER itself made later are applied in memory, nothing else:

* Granularity: the description in ``shared/`` (2024-10-22) permits ``Month`` and ``Total``; the
  Code of Practice (section 3.3.7), the Validation Tool and the corrected description
  (Project-Counter/cop5 issue #293, pull request #295, January 2025) permit ``Month`` and
  ``Totals``.
* Registry_Record: the description only accepts ``https://registry.projectcounter.org/
  platform/…``, while COUNTER's own sample report of the same commit links to
  ``registry.countermetrics.org``, where the Registry now is, and usage-data-host records are
  allowed too (cop5 pull request #283); the pattern is widened to those.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "counter-r51"
API_FILE = SHARED / "COUNTER_API.json"
SAMPLE_IR = SHARED / "IR_sample_r51.json"
URI = "urn:counter-r51:api"


@functools.lru_cache(maxsize=1)
def _document() -> dict[str, Any] | None:
    if not API_FILE.is_file():
        return None
    doc: dict[str, Any] = json.loads(API_FILE.read_text(encoding="utf-8"))
    granularity = doc["components"]["schemas"]["Granularity_Attribute"]["properties"]
    granularity["Granularity"]["enum"] = ["Month", "Totals"]  # cop5 #293 (see above)
    registry = (r"^(https://registry\.(projectcounter|countermetrics)\.org/"
                r"(platform|usage-data-host)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                r"[0-9a-f]{12}|)$")
    for name in ("Base_Report_Header", "Status"):
        doc["components"]["schemas"][name]["properties"]["Registry_Record"]["pattern"] = registry
    return doc


def document() -> dict[str, Any]:
    doc = _document()
    if doc is None:
        pytest.skip(f"COUNTER's R5.1 API description is not at {API_FILE} "
                    "(shared/counter-r51/, beside the repository): schema checks skipped")
    return doc


@functools.cache
def _validator(pointer: str) -> Draft202012Validator:
    doc = document()
    registry: Registry[Any] = Registry().with_resource(
        URI, Resource.from_contents(doc, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{URI}#{pointer}"}, registry=registry,
                                format_checker=FormatChecker())


def errors(instance: Any, pointer: str) -> list[str]:
    """Every way ``instance`` breaks the schema at ``pointer`` (``/components/schemas/IR``),
    as readable lines; empty when it conforms."""
    found = sorted(_validator(pointer).iter_errors(instance), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]


def model(name: str) -> str:
    """The pointer of a schema model, e.g. ``IR`` or ``Exception_3030``."""
    return f"/components/schemas/{name}"


def response(path: str, status: int) -> str:
    """The pointer of the JSON schema of ``GET path``'s answer with HTTP ``status``, as the
    description's ``paths`` give it (following its ``responses`` references)."""
    doc = document()
    ref = doc["paths"][path]["get"]["responses"][str(status)]["$ref"]
    name = ref.rsplit("/", 1)[-1]
    return f"/components/responses/{name}/content/application~1json/schema"


def assert_valid(instance: Any, pointer: str) -> None:
    found = errors(instance, pointer)
    assert not found, f"not valid against COUNTER_API.json {pointer}:\n" + "\n".join(found[:20])
