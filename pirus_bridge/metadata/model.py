"""The values metadata lookups produce: :class:`ItemMetadata` and :class:`MetadataError`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol
from urllib.parse import unquote

from pirus_bridge.exceptions import PirusBridgeError

# Error codes that mean "this item has no metadata" rather than "the endpoint failed".
ABSENT_CODES = frozenset(
    {"idDoesNotExist", "cannotDisseminateFormat", "deleted", "noRecord", "noIdentifier"}
)


class MetadataError(PirusBridgeError):
    """Metadata could not be had. ``code`` is the OAI-PMH error code (or one of ours: ``deleted``,
    ``noRecord``, ``noIdentifier``, ``http``, ``malformed``), ``status`` the HTTP status if any,
    ``retryable`` whether trying again soon may help (connection errors, timeouts, 5xx)."""

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        self.reason = reason
        self.code = code
        self.status = status
        self.retryable = retryable
        super().__init__(f"{code}: {reason}" if code else reason)

    @property
    def absent(self) -> bool:
        """True when the endpoint answered that the item has no (disseminable) record."""
        return self.code in ABSENT_CODES


@dataclass(frozen=True)
class ItemMetadata:
    """The metadata of one repository item that counting and the gatherer profiles use."""

    item: str
    oai_identifier: str | None = None
    title: str | None = None
    creators: tuple[str, ...] = ()
    contributors: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    doi: str | None = None
    mime_type: str | None = None
    collections: tuple[str, ...] = ()
    publishers: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    keyphrases: tuple[str, ...] = ()
    institutions: tuple[str, ...] = ()
    faculties: tuple[str, ...] = ()
    thesis_types: tuple[str, ...] = ()
    datestamp: str | None = None

    def to_json(self) -> str:
        """Compact JSON for the ``json`` field of ``md:{item}``."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ItemMetadata:
        """Inverse of :meth:`to_json`; unknown fields are ignored, bad ones raise MetadataError."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise MetadataError(f"cached metadata is not JSON: {e}", code="malformed") from e
        if not isinstance(data, dict) or not isinstance(data.get("item"), str):
            raise MetadataError("cached metadata has no item", code="malformed")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            value = data[f.name]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                values[f.name] = tuple(value)
            elif isinstance(value, str):
                values[f.name] = value
            else:
                raise MetadataError(f"cached field {f.name} is {value!r}", code="malformed")
        return cls(**values)


_DOI = re.compile(
    r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*|info:doi/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE
)


def find_doi(values: Sequence[str]) -> str | None:
    """The first DOI among whole values like ``https://doi.org/10.1234/x``, ``doi:10.1234/x``,
    ``info:doi/10.1234/x`` or a bare ``10.1234/x``; citations that merely mention one are not
    read."""
    for value in values:
        m = _DOI.match(value.strip())
        if m:
            return unquote(m.group(1)).rstrip(".,;")
    return None


class MetadataProvider(Protocol):
    """Anything that can fetch an item's metadata; None means "no metadata, by design"."""

    def fetch(self, item: str, oai_identifier: str | None) -> ItemMetadata | None: ...


class NoMetadata:
    """The provider for sites without a metadata source: every item has none."""

    def fetch(self, item: str, oai_identifier: str | None) -> ItemMetadata | None:
        """Always None."""
        return None

    def close(self) -> None:
        """Nothing to close."""
