"""How a repository item becomes an Item Report item: its R5.1 elements from its metadata (pure).

The metadata is the record the metadata provider cached for the item (``md:{item}``: the parsed
record's fields such as ``title``, ``creators``, ``types``, ``dates``, ``publishers``, ``doi``,
plus the ``oai_identifier`` the mapping found). Each element's rule, from the Code of Practice:

* ``Item``: the title; empty when unknown (it is a required element), in which case the
  Item_ID still identifies the item (CoP 3.3.2).
* ``Item_ID``: ``DOI`` where the record has one in COUNTER's DOI form; ``Proprietary`` the OAI
  identifier (``oai:host:id`` is already ``{namespace}:{value}``), else ``{platform_id}:{item}``.
* ``Publisher``: the record's first publisher, else the configured ``counter_api.publisher``.
* ``Data_Type``: the first of the record's types that the mapping knows (configured entries
  first, then :data:`DEFAULT_DATA_TYPES`; matched case-insensitively, also by the last segment
  of a vocabulary URI such as ``info:eu-repo/semantics/article``), else
  ``counter_api.default_data_type`` (``Other``).
* ``YOP``: the year of the earliest date in the record; ``0001`` when there is none (CoP 3.3.9).
* ``Publication_Date``: that earliest date, when it is a whole ``yyyy-mm-dd`` date.
* ``Access_Type``: ``counter_api.access_type`` (``Open`` for an open-access repository), unless
  the record states an access right from the OpenAIRE vocabulary (``info:eu-repo/semantics/
  openAccess`` → Open; ``embargoedAccess``, ``restrictedAccess``, ``closedAccess`` → Controlled)
  among its types or rights.
* ``Access_Method``: ``Regular`` — pirus-bridge counts people, never text and data mining.
* ``Authors``: the first three creators; ``Article_Version`` from an OpenAIRE version type
  (``acceptedVersion`` → AM …) where the record has one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pirus_bridge.r51 import vocabulary as v

# Metadata type (lower case) -> Data_Type. Dublin Core types, the OpenAIRE (info:eu-repo)
# publication types, and the type names EPrints and DSpace ship with. A whole book in a
# repository is one Book_Segment (CoP 3.3.8: a book whose segments cannot be told apart is
# counted as a single Book_Segment).
DEFAULT_DATA_TYPES: dict[str, str] = {
    **dict.fromkeys(("article", "journal article", "journalarticle", "journal_article",
                     "contribution to journal", "preprint", "review", "review article",
                     "letter", "editorial"), "Article"),
    **dict.fromkeys(("book", "book section", "book_section", "bookpart", "book part",
                     "book chapter", "chapter", "part of book", "monograph"), "Book_Segment"),
    **dict.fromkeys(("conference_item", "conference item", "conference paper",
                     "conferencepaper", "conferenceobject", "conference object",
                     "conferenceposter", "conference poster", "poster", "conferenceproceedings",
                     "conference proceedings", "conferencecontribution", "presentation",
                     "lecture"), "Conference_Item"),
    **dict.fromkeys(("dataset", "data set", "data"), "Dataset"),
    **dict.fromkeys(("image", "still image", "stillimage", "figure", "artefact"), "Image"),
    **dict.fromkeys(("video", "moving image", "movingimage", "film", "audiovisual"),
                    "Audiovisual"),
    **dict.fromkeys(("sound", "audio", "composition"), "Sound"),
    **dict.fromkeys(("software", "computer program", "code"), "Software"),
    **dict.fromkeys(("report", "technical report", "research report", "reportpart",
                     "monograph (report)", "working paper", "workingpaper",
                     "technicaldocumentation"), "Report"),
    **dict.fromkeys(("thesis", "dissertation", "doctoral thesis", "doctoralthesis",
                     "master thesis", "masterthesis", "bachelor thesis", "bachelorthesis",
                     "phd thesis", "thesis or dissertation"), "Thesis_or_Dissertation"),
    **dict.fromkeys(("patent",), "Patent"),
    **dict.fromkeys(("standard",), "Standard"),
    **dict.fromkeys(("interactive resource", "interactiveresource", "website"),
                    "Interactive_Resource"),
    **dict.fromkeys(("multimedia", "exhibition", "performance"), "Multimedia"),
    **dict.fromkeys(("news item", "newspaper article", "contributiontoperiodical",
                     "magazine article"), "News_Item"),
    **dict.fromkeys(("encyclopedia entry", "dictionary entry", "reference entry"),
                    "Reference_Item"),
    "other": "Other",
}
# OpenAIRE access rights (info:eu-repo/semantics/…), lower case -> Access_Type.
ACCESS_RIGHTS = {"openaccess": "Open", "embargoedaccess": "Controlled",
                 "restrictedaccess": "Controlled", "closedaccess": "Controlled"}
# OpenAIRE versions and common labels, lower case -> NISO Article_Version.
ARTICLE_VERSIONS = {
    "draft": "AO", "author's original": "AO", "submittedversion": "SMUR",
    "submitted version": "SMUR", "acceptedversion": "AM", "accepted version": "AM",
    "accepted manuscript": "AM", "publishedversion": "VoR", "published version": "VoR",
    "version of record": "VoR",
}  # fmt: skip
UNKNOWN_YOP = "0001"
_DATE = re.compile(r"^\s*(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


@dataclass(frozen=True)
class Describer:
    """The report provider's side of the elements (from ``counter_api``)."""

    platform_id: str
    publisher: str = ""
    access_type: str = "Open"
    data_types: Mapping[str, str] = field(default_factory=dict)  # configured, lower-case keys
    default_data_type: str = "Other"

    def data_type(self, types: Sequence[str]) -> str:
        for value in types:
            name = value.strip().lower()
            for key in (name, name.rstrip("/").rsplit("/", 1)[-1]):
                found = self.data_types.get(key) or DEFAULT_DATA_TYPES.get(key)
                if found:
                    return found
        return self.default_data_type

    def describe(self, item: str, md: Mapping[str, Any]) -> ItemElements:
        """The R5.1 elements of ``item`` from its metadata record (missing fields are fine)."""
        types = _texts(md.get("types"))
        year, date = publication(_texts(md.get("dates")))
        item_id: dict[str, str] = {}
        doi = md.get("doi")
        if isinstance(doi, str) and v.DOI_PATTERN.match(doi.strip()):
            item_id["DOI"] = doi.strip()
        oai = md.get("oai_identifier")
        if isinstance(oai, str) and v.PROPRIETARY_PATTERN.match(oai):
            item_id["Proprietary"] = oai
        else:
            item_id["Proprietary"] = f"{self.platform_id}:{item}"
        publishers = _texts(md.get("publishers"))
        access = self.access_type
        for value in (*types, *_texts(md.get("rights"))):
            found = ACCESS_RIGHTS.get(_last_segment(value))
            if found:
                access = found
                break
        version = next((ARTICLE_VERSIONS[k] for k in map(_last_segment, types)
                        if k in ARTICLE_VERSIONS), None)
        title = md.get("title")
        return ItemElements(
            item=item,
            title=title.strip() if isinstance(title, str) else "",
            item_id=item_id,
            publisher=publishers[0] if publishers else self.publisher,
            data_type=self.data_type(types),
            yop=year,
            publication_date=date,
            access_type=access,
            authors=tuple(a for a in _texts(md.get("creators")) if len(a) >= 2)[:3],
            article_version=version,
        )


@dataclass(frozen=True)
class ItemElements:
    """One item's R5.1 elements."""

    item: str  # the repository's item id (not an R5.1 element; the report's sort key)
    title: str
    item_id: Mapping[str, str]
    publisher: str
    data_type: str
    yop: str
    access_type: str
    access_method: str = "Regular"
    publication_date: str | None = None
    authors: tuple[str, ...] = ()
    article_version: str | None = None


def publication(dates: Sequence[str]) -> tuple[str, str | None]:
    """``(YOP, Publication_Date)`` from a record's dates: the earliest year (``0001`` when no
    date has one) and, when that earliest date is a whole valid day, the day."""
    best: tuple[int, str | None] | None = None
    for text in dates:
        m = _DATE.match(text)
        if not m or int(m.group(1)) < 1:
            continue
        year, day = int(m.group(1)), None
        if m.group(3):
            try:
                day = dt.date(year, int(m.group(2)), int(m.group(3))).isoformat()
            except ValueError:
                day = None
        if best is None or year < best[0] or (year == best[0] and day and not best[1]):
            best = (year, day)
    if best is None:
        return UNKNOWN_YOP, None
    return f"{best[0]:04d}", best[1]


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, list | tuple):
        return tuple(x.strip() for x in value if isinstance(x, str) and x.strip())
    return ()


def _last_segment(value: str) -> str:
    return value.strip().lower().rstrip("/").rsplit("/", 1)[-1]
