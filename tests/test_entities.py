"""Entity keys (pure tables) and the entity model in a real Redis."""

from __future__ import annotations

import hashlib

import pytest
import redis

from pirus_bridge import entities, keys
from pirus_bridge.entities import (
    bundle_entities,
    entity_key,
    extract_entities,
    items_for_entities,
    resolve_entity,
    store_entities,
    text_index,
)
from pirus_bridge.metadata import ItemMetadata


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# --- pure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "text", "scope", "expected"),
    [
        ("name", "Ben", None, "n:092f2ba9f39fbc2876e64d12cd662f72"),  # the seed's own example
        ("name", "  Ben \n", None, "n:092f2ba9f39fbc2876e64d12cd662f72"),
        ("subject", "foo", None, "s:" + md5("foo")),
        ("subject", "Tidal\t mixing\n\nstudies", None, "s:" + md5("Tidal mixing studies")),
        ("institution", "Example Univ", None, "i:" + md5("Example Univ")),
        ("faculty", "Science", None, "f:" + md5("Science")),
        ("keyphrase", "field study", None, "k:" + md5("field study")),
        ("type", "Article", None, "type:" + md5("Article")),
        ("collection", "col_1_7", None, "col:" + md5("col_1_7")),
        ("thesis_type", "PhD", None, "tt:" + md5("PhD")),
        ("name", "Ben", "pid:1", "n:" + md5("pid:1\x1fBen")),
        ("name", " Ben  ", "pid:1", "n:" + md5("pid:1\x1fBen")),
        ("name", "Ben", "pid:2", "n:" + md5("pid:2\x1fBen")),
        ("name", "Se\u0301an", None, "n:" + md5("S\u00e9an")),  # NFC
    ],
)
def test_entity_key_derivation(type_name: str, text: str, scope: str | None, expected: str) -> None:
    assert entity_key(type_name, text, scope) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("name", "Ben", None), ("name", "Ben", None), True),
        (("name", "Ben", None), ("name", "BEN", None), False),  # case is kept
        (("name", "Ben", None), ("subject", "Ben", None), False),  # md5 equal, prefix differs
        (("name", "Ben", "pid:1"), ("name", "Ben", "pid:2"), False),
        (("name", "Ben", "pid:1"), ("name", "Ben", None), False),
        (("name", "a b", None), ("name", "a\u00a0 b", None), True),
    ],
)
def test_entity_key_identity(
    a: tuple[str, str, str | None], b: tuple[str, str, str | None], same: bool
) -> None:
    assert (entity_key(*a) == entity_key(*b)) is same


def test_entity_key_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown entity type 'author'"):
        entity_key("author", "Ben")


@pytest.mark.parametrize("key", ["x:abc", "nope", "md:{1}"])
def test_entity_type_rejects_non_entity_keys(key: str) -> None:
    with pytest.raises(ValueError):
        entities.entity_type(key)


def test_entity_type_round_trip() -> None:
    for type_name in keys.ENTITY_TYPES:
        assert entities.entity_type(entity_key(type_name, "x")) == type_name


MD = ItemMetadata(
    item="pid:1",
    creators=("Ben", "Smith,  Jane"),
    contributors=("Ben",),
    subjects=("foo", "bar", "  "),
    types=("Article",),
    collections=("col_1_7",),
    publishers=("Example Press",),
    keyphrases=("tidal mixing",),
    institutions=("Example University",),
    faculties=("Science",),
    thesis_types=("PhD",),
)


def test_extract_entities_unscoped_maps_each_field_to_its_type() -> None:
    found = extract_entities(MD, scoped=False)
    assert found == {
        entity_key("name", "Ben"): "Ben",
        entity_key("name", "Smith, Jane"): "Smith, Jane",
        entity_key("subject", "foo"): "foo",
        entity_key("subject", "bar"): "bar",
        entity_key("type", "Article"): "Article",
        entity_key("collection", "col_1_7"): "col_1_7",
        entity_key("institution", "Example Press"): "Example Press",
        entity_key("institution", "Example University"): "Example University",
        entity_key("keyphrase", "tidal mixing"): "tidal mixing",
        entity_key("faculty", "Science"): "Science",
        entity_key("thesis_type", "PhD"): "PhD",
    }


def test_extract_entities_scoped_uses_the_item_id() -> None:
    found = extract_entities(MD, scoped=True)
    assert entity_key("name", "Ben", "pid:1") in found
    assert entity_key("name", "Ben") not in found
    assert len(found) == len(extract_entities(MD, scoped=False))


def test_extract_entities_empty_metadata() -> None:
    assert extract_entities(ItemMetadata(item="x"), scoped=False) == {}


# --- Redis --------------------------------------------------------------------------------------


def smembers(r: redis.Redis, key: str) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else m for m in r.smembers(key)}


def test_store_entities_writes_the_seed_model(r: redis.Redis) -> None:
    found = extract_entities(
        ItemMetadata(item="pid:1", creators=("Ben",), subjects=("foo",)), scoped=False
    )
    store_entities(r, "pid:1", found)
    ben, foo = entity_key("name", "Ben"), entity_key("subject", "foo")
    assert r.get(ben) == b"Ben"
    assert smembers(r, "names") == {ben}
    assert smembers(r, "subjects") == {foo}
    assert smembers(r, keys.item_entities("pid:1")) == {ben, foo}
    assert smembers(r, keys.entity_items(ben)) == {"pid:1"}
    assert smembers(r, text_index("Ben")) == {ben}


def test_store_entities_reverse_mapping_is_set_once(r: redis.Redis) -> None:
    key = entity_key("name", "Ben")
    store_entities(r, "pid:1", {key: "Ben"})
    store_entities(r, "pid:2", {key: "Ben (changed)"})
    assert r.get(key) == b"Ben"
    assert smembers(r, keys.entity_items(key)) == {"pid:1", "pid:2"}


def test_store_entities_in_callers_pipeline_waits_for_execute(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    store_entities(r, "pid:1", {entity_key("name", "Ben"): "Ben"}, pipeline=pipe)
    assert r.exists(keys.item_entities("pid:1")) == 0
    pipe.execute()
    assert r.exists(keys.item_entities("pid:1")) == 1


def test_store_entities_nothing_to_store(r: redis.Redis) -> None:
    store_entities(r, "pid:1", {})
    assert r.dbsize() == 0


def test_resolve_entity_unscoped_and_scoped(r: redis.Redis) -> None:
    for item in ("pid:1", "pid:2"):
        store_entities(
            r, item, extract_entities(ItemMetadata(item=item, creators=("Ben",)), scoped=True)
        )
    store_entities(
        r, "pid:3", {entity_key("name", "Ben"): "Ben", entity_key("subject", "Ben"): "Ben"}
    )
    expected = sorted(
        [
            entity_key("name", "Ben", "pid:1"),
            entity_key("name", "Ben", "pid:2"),
            entity_key("name", "Ben"),
            entity_key("subject", "Ben"),
        ]
    )
    assert resolve_entity(r, " Ben ") == expected
    assert resolve_entity(r, "Ben", types=["subject"]) == [entity_key("subject", "Ben")]
    assert resolve_entity(r, "Nobody") == []
    assert items_for_entities(r, resolve_entity(r, "Ben", types=["name"])) == {
        "pid:1",
        "pid:2",
        "pid:3",
    }


def test_resolve_entity_finds_unindexed_seed_keys(r: redis.Redis) -> None:
    key = entity_key("name", "Ben")
    r.set(key, "Ben")  # written by the seed's code: no txt: index
    assert resolve_entity(r, "Ben") == [key]


def test_bundles_join_equivalent_entities(r: redis.Redis) -> None:
    jane = entity_key("name", "Smith, Jane", "pid:1")
    j = entity_key("name", "Smith, J.", "pid:2")
    other = entity_key("name", "Smith, John", "pid:3")
    store_entities(r, "pid:1", {jane: "Smith, Jane"})
    store_entities(r, "pid:2", {j: "Smith, J."})
    store_entities(r, "pid:3", {other: "Smith, John"})
    bundle_entities(r, "jane-smith", [jane, j])
    assert smembers(r, keys.bundle("jane-smith")) == {jane, j}
    assert smembers(r, keys.BUNDLES) == {"jane-smith"}
    assert r.get(keys.bundle_of(jane)) == b"jane-smith"
    assert resolve_entity(r, "Smith, Jane") == sorted([jane, j])
    assert items_for_entities(r, resolve_entity(r, "Smith, J.")) == {"pid:1", "pid:2"}
    assert resolve_entity(r, "Smith, John") == [other]


def test_bundle_entities_moves_a_key_between_bundles(r: redis.Redis) -> None:
    a, b = entity_key("name", "A"), entity_key("name", "B")
    bundle_entities(r, "first", [a, b])
    bundle_entities(r, "second", [b])
    assert smembers(r, keys.bundle("first")) == {a}
    assert smembers(r, keys.bundle("second")) == {b}
    assert r.get(keys.bundle_of(b)) == b"second"


@pytest.mark.parametrize(("name", "members"), [("", ["n:x"]), ("b", []), ("b", ["nope"])])
def test_bundle_entities_rejects_bad_input(r: redis.Redis, name: str, members: list[str]) -> None:
    with pytest.raises(ValueError):
        bundle_entities(r, name, members)


def test_items_for_entities_empty(r: redis.Redis) -> None:
    assert items_for_entities(r, []) == set()
