"""Metadata entities in Redis: the seed's type prefix + md5 keys, bundles and a text index.

An entity is a piece of item metadata worth counting usage for (a name, a subject, a collection
…). Following the seed (first post of ``seeds/``), its key is a type prefix from
:data:`pirus_bridge.keys.ENTITY_TYPES` plus the md5 hex digest of its text, e.g. the name
``Ben`` is ``n:092f2ba9f39fbc2876e64d12cd662f72``.

Normalisation: the text is Unicode NFC-normalised, stripped, and runs of whitespace are collapsed
to one space. Case is **not** folded, so unscoped keys equal the seed's ``md5(text)`` keys and
``"Ben"`` and ``"BEN"`` stay two entities; asserting they are one is what bundles are for.

Scoping (the seed's "truth-manageable" option): with a scope (the record id) the digest is taken
over ``scope + "\\x1f" + text``, so the same name in two records gives two keys, and equivalence
is asserted separately in a ``b:`` bundle.

Redis keys written here (``keys.py`` documents the seed ones):

``<prefix><md5>``
    string, the entity's text (reverse mapping; written with SET NX).
``names``, ``subjects`` …
    per-type set of entity keys (see ``ENTITY_TYPES``).
``e:{item}`` / ``e:<entity>``
    item → entity keys, entity key → item ids.
``b:<bundle>``, ``bundles``, ``bundleof:<entity>``
    bundles of asserted equivalence; an entity key belongs to at most one bundle.
``txt:<md5 of normalised text>``
    set of every entity key (any type, scoped or not) whose normalised text has that digest.
    Added by this module so :func:`resolve_entity` can find scoped keys from a text.

Where metadata fields go (see :func:`extract_entities`): creators and contributors → ``name``;
publishers and institutions → ``institution``; faculties → ``faculty``; subjects → ``subject``;
keyphrases → ``keyphrase``; types → ``type``; collections (OAI ``setSpec`` or the Solr collection
field) → ``collection``; thesis types → ``thesis_type``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import redis

from pirus_bridge import keys

if TYPE_CHECKING:
    from pirus_bridge.metadata import ItemMetadata

SCOPE_SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in a record id or normalised text

_WHITESPACE = re.compile(r"\s+")
_PREFIX_TO_TYPE = {prefix: name for name, (prefix, _) in keys.ENTITY_TYPES.items()}

# ItemMetadata attribute → entity type it feeds.
FIELD_TYPES: dict[str, str] = {
    "creators": "name",
    "contributors": "name",
    "publishers": "institution",
    "institutions": "institution",
    "faculties": "faculty",
    "subjects": "subject",
    "keyphrases": "keyphrase",
    "types": "type",
    "collections": "collection",
    "thesis_types": "thesis_type",
}


def normalise(text: str) -> str:
    """NFC-normalise, strip and collapse whitespace; case is kept (see the module docstring)."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def entity_key(type_name: str, text: str, scope: str | None = None) -> str:
    """The key of the entity ``text`` of type ``type_name``, optionally scoped by a record id.

    >>> entity_key("name", "Ben")
    'n:092f2ba9f39fbc2876e64d12cd662f72'
    """
    try:
        prefix = keys.ENTITY_TYPES[type_name][0]
    except KeyError:
        known = ", ".join(sorted(keys.ENTITY_TYPES))
        raise ValueError(f"unknown entity type {type_name!r}: use one of {known}") from None
    norm = normalise(text)
    return prefix + _md5(norm if scope is None else scope + SCOPE_SEPARATOR + norm)


def text_index(text: str) -> str:
    """``txt:<md5 of normalised text>``: the set of entity keys carrying this text."""
    return "txt:" + _md5(normalise(text))


def entity_type(key: str) -> str:
    """The entity type name of an entity key (``n:…`` → ``name``); ValueError if not one."""
    prefix = key.split(":", 1)[0] + ":"
    try:
        return _PREFIX_TO_TYPE[prefix]
    except KeyError:
        raise ValueError(f"not an entity key: {key!r}") from None


def extract_entities(md: ItemMetadata, *, scoped: bool) -> dict[str, str]:
    """Map entity key → normalised text for every entity in ``md`` (see ``FIELD_TYPES``).

    With ``scoped`` the keys are scoped by ``md.item``. Empty values are skipped.
    """
    scope = md.item if scoped else None
    found: dict[str, str] = {}
    for field, type_name in FIELD_TYPES.items():
        for value in getattr(md, field):
            text = normalise(value)
            if text:
                found[entity_key(type_name, text, scope)] = text
    return found


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def store_entities(
    r: redis.Redis,
    item: str,
    entities: Mapping[str, str],
    pipeline: redis.client.Pipeline | None = None,
) -> None:
    """Link ``item`` with ``entities`` (key → text, as from :func:`extract_entities`).

    Writes the reverse mapping (SET NX), the per-type set, ``e:{item}``, ``e:<entity>`` and the
    ``txt:`` index. With ``pipeline`` the commands are only queued; the caller executes them.
    """
    if not entities:
        return
    pipe = pipeline if pipeline is not None else r.pipeline(transaction=False)
    for key, text in entities.items():
        type_set = keys.ENTITY_TYPES[entity_type(key)][1]
        pipe.set(key, text, nx=True)
        pipe.sadd(type_set, key)
        pipe.sadd(keys.entity_items(key), item)
        pipe.sadd(text_index(text), key)
    pipe.sadd(keys.item_entities(item), *entities)
    if pipeline is None:
        pipe.execute()


def bundle_entities(
    r: redis.Redis,
    name: str,
    entity_keys: Iterable[str],
    pipeline: redis.client.Pipeline | None = None,
) -> None:
    """Assert that ``entity_keys`` are one person or thing: add them to the bundle ``b:<name>``.

    An entity key belongs to at most one bundle; a key already in another bundle is moved.
    """
    members = list(dict.fromkeys(entity_keys))
    if not name or not members:
        raise ValueError("a bundle needs a name and at least one entity key")
    for key in members:
        entity_type(key)  # validates
    old = r.mget([keys.bundle_of(k) for k in members])
    pipe = pipeline if pipeline is not None else r.pipeline(transaction=False)
    for key, previous in zip(members, old, strict=True):
        if previous is not None and _decode(previous) != name:
            pipe.srem(keys.bundle(_decode(previous)), key)
        pipe.set(keys.bundle_of(key), name)
    pipe.sadd(keys.bundle(name), *members)
    pipe.sadd(keys.BUNDLES, name)
    if pipeline is None:
        pipe.execute()


def resolve_entity(r: redis.Redis, text: str, types: Iterable[str] | None = None) -> list[str]:
    """Every entity key equivalent to ``text``, sorted.

    Looks up the unscoped key of each type directly, the scoped keys through the ``txt:`` index,
    then follows each key's bundle to all keys asserted to be the same entity. ``types``
    restricts the result to those entity types (default: all).
    """
    wanted = set(keys.ENTITY_TYPES if types is None else types)
    direct = [entity_key(t, text) for t in sorted(wanted)]
    pipe = r.pipeline(transaction=False)
    for key in direct:
        pipe.exists(key)
    pipe.smembers(text_index(text))
    *exists, indexed = pipe.execute()
    found = {k for k, e in zip(direct, exists, strict=True) if e}
    found |= {_decode(k) for k in indexed}
    found = {k for k in found if entity_type(k) in wanted}
    if not found:
        return []
    ordered = sorted(found)
    bundle_names = {_decode(b) for b in r.mget([keys.bundle_of(k) for k in ordered]) if b}
    if bundle_names:
        pipe = r.pipeline(transaction=False)
        for b in sorted(bundle_names):
            pipe.smembers(keys.bundle(b))
        for members in pipe.execute():
            found |= {_decode(m) for m in members}
    return sorted(found)


def items_for_entities(r: redis.Redis, entity_keys: Iterable[str]) -> set[str]:
    """The ids of the items any of ``entity_keys`` occurs in (union of their ``e:<entity>``).

    Reads each set separately rather than with SUNION, so it also works on Redis Cluster.
    """
    wanted = list(dict.fromkeys(entity_keys))
    if not wanted:
        return set()
    pipe = r.pipeline(transaction=False)
    for key in wanted:
        pipe.smembers(keys.entity_items(key))
    return {_decode(item) for members in pipe.execute() for item in members}
