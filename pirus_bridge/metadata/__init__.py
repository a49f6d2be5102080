"""Item metadata and identifier resolution: providers, their Redis caches, background fetching.

Pure parsers (:func:`parse_oai_dc`, :func:`parse_solr`, :func:`parse_dspace_bitstream` …) turn
a response body into a value; providers (:class:`OaiPmhProvider`, :class:`SolrProvider`,
:class:`DSpaceRestProvider`, :class:`NoMetadata`) do the HTTP with retries;
:class:`MetadataCache` keeps each item's metadata in ``md:{item}``; :class:`Fetcher` answers
lookups at once from the cache (or "not yet") and fetches in the background behind a circuit
breaker, so a slow or dead endpoint never stalls counting (SPEC §5, §7).
"""

from pirus_bridge.metadata.cache import MetadataCache
from pirus_bridge.metadata.dspace import (
    DSpaceRestProvider,
    parse_dspace_bitstream,
    parse_dspace_bundle,
    parse_dspace_item,
)
from pirus_bridge.metadata.fetcher import Breaker, Fetcher, MatchResolver, build_fetcher
from pirus_bridge.metadata.http import MAX_RESPONSE_BYTES, HttpProvider
from pirus_bridge.metadata.model import (
    ABSENT_CODES,
    ItemMetadata,
    MetadataError,
    MetadataProvider,
    NoMetadata,
    find_doi,
)
from pirus_bridge.metadata.oai import (
    DC_NS,
    NS,
    OAI_NS,
    OaiPmhProvider,
    hardened_parser,
    parse_oai_dc,
)
from pirus_bridge.metadata.resolution import PENDING, UNAVAILABLE, Resolution, apply
from pirus_bridge.metadata.solr import DEFAULT_SOLR_FIELDS, SolrProvider, parse_solr, solr_quote

__all__ = [
    "PENDING", "UNAVAILABLE", "Breaker", "DSpaceRestProvider", "Fetcher", "MatchResolver",
    "Resolution", "apply", "build_fetcher", "parse_dspace_bitstream", "parse_dspace_bundle",
    "parse_dspace_item",
    "ABSENT_CODES", "DC_NS", "DEFAULT_SOLR_FIELDS", "MAX_RESPONSE_BYTES", "NS", "OAI_NS",
    "HttpProvider", "ItemMetadata", "MetadataCache", "MetadataError", "MetadataProvider",
    "NoMetadata", "OaiPmhProvider", "SolrProvider", "find_doi", "hardened_parser",
    "parse_oai_dc", "parse_solr", "solr_quote",
]  # fmt: skip
