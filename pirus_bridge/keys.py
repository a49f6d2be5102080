"""Every Redis key pirus-bridge reads or writes, in one place.

The model starts from the 2010 usage-statistics pipeline (see ``docs/redis-model.md``): the same
prefixes and set shapes, made safe for memory, privacy and Redis Cluster.

Hash tags: every per-item key carries the item id in braces, e.g. ``dv:{1234}``, so an item's
keys hash to the same Cluster slot; the braces also read like the seed's own ``e:{id}``
notation. Outbox keys carry the gatherer name in braces instead, live-queue keys their queue's
name. One counting transaction still spans many items' keys, ``objectitems`` and the outbox
keys, so counting does not run on a Redis Cluster yet (``docs/redis-model.md``, "Redis
Cluster: the plan").

Items and metadata
    ``objectitems``                 set of every item id that has been counted (seed name)
    ``md:{item}``                   hash: ``oai_identifier``, ``title``, ``doi``, ``mime``,
                                    ``status`` (``ok`` | ``failed`` | ``none``), ``fetched_at``,
                                    ``json`` (the whole metadata record when ``ok``)
    ``rs:<kind>:{id}``              string: a resolution (JSON) of a DSpace UUID, an item or a
                                    file by the metadata provider, negative ones too; expires
                                    (``pirus_bridge.metadata.fetcher``)

Entities (seed post 1: type prefix + md5 of the text, optionally scoped by record id)
    ``<p>:<md5>``                   string: the entity's text (reverse mapping), e.g. ``n:092f…``
    ``names``, ``subjects`` …       set per entity type of its entity keys (see ENTITY_TYPES)
    ``e:{item}``                    set of the entity keys occurring in an item
    ``e:<entity>``                  set of the item ids an entity occurs in, e.g. ``e:n:092f…``
    ``b:<bundle>``                  set of entity keys asserted to be one person or thing
    ``bundles``                     set of bundle names; ``bundleof:<entity>`` its bundle name
    ``txt:<md5>``                   set of the entity keys (any type, scoped or not) whose
                                    normalised text has that md5 (``stats entity`` lookups)

Counting (all item-tagged)
    ``c:{item}``                    hash: COUNTER metrics, fields ``YYYY-MM:<metric code>``
                                    (TII, UII, TIR, UIR: Total/Unique Item Investigations/Requests;
                                    DC: the month's usage lines superseded as double-clicks)
    ``dly:{item}``                  hash: daily-unique series, fields ``YYYY-MM-DD:v`` / ``:d``
    ``dv:{item}`` / ``dd:{item}``   sets of the days the item was viewed / downloaded (seed),
                                    as day numbers (:func:`day_number`: an intset, ~5-100 B a
                                    day by the set's size, where date strings cost ~60-230 B)
    ``t:views:{item}`` / ``t:dls:{item}``  all-time daily-unique totals (seed)
    ``YYYY-MM-DD:{item}``           hash: all dedupe state of the item on that UTC day (the
                                    seed's per-day client sets, folded into one small hash that
                                    expires once the day is closed), fields:
                                    ``L:<line>`` the log line was counted (its identity);
                                    ``kI:<user><url>`` / ``kR:`` the user's chains of clicks on
                                    that URL, ``a-b a-b`` in seconds of the day (R5.1
                                    double-clicks); ``n:<user>`` the user's lines on the item;
                                    ``I:<session>`` / ``R:<session>`` actions of the COUNTER
                                    session on the item (Unique_Item_*);
                                    ``v:<client>`` / ``d:<client>`` view / download actions of
                                    the client (the seed's daily-unique rule);
                                    ``_`` the hash exists (so has its TTL)

Processing
    ``u:<category>``                lines seen per category: ``u:bothits``, ``u:objectviews``,
                                    ``u:fof``, ``u:other``, ``u:unparsed`` (seed names)
    ``botlist``                     set of names of sets of robot IP addresses / CIDR ranges (seed)
    ``salt``                        the generated salt for client hashes, when none is configured
    ``ingest:<id>``                 hash: the bulk-ingest checkpoints of the log streams whose
                                    first line hashes to ``id``: entry id → JSON (offset, line,
                                    head and tail digests; ``pirus_bridge.checkpoint``)
    ``ingest:<id>:lock``            string: the lease of the run reading such a stream
    ``vol:<YYYY-MM-DD>``            hash: the volume rule's count of each user's usage lines that
                                    day (field ``<user>``; past the limit: excluded); expires
                                    with the day's dedupe state
    ``vol:<YYYY-MM-DD>:items``      set: the items with usage that day (where an excluded user's
                                    lines are looked for), same expiry
    ``park:<kind>:{<id>}``          list: usage events (JSON, raw address and agent included)
                                    waiting for the metadata provider to answer ``<kind>``
                                    about ``<id>`` (``pirus_bridge.parking``); expires once
                                    their day has closed
    ``parked``                      set of ``<kind>|<id>`` with parked events
    ``acct:<YYYY-MM>``              hash: the month's line accounting of the lines that are not
                                    usage, by the lines' own timestamps: ``unparsed``,
                                    ``bot:<source>``, ``notfound``, ``other`` (usage lines are
                                    in ``c:{item}``: actions and ``DC``)
    ``tail:<absolute path>``        hash: a followed file's identity (first-line hash), offset
                                    and line (``pirus_bridge.tail``)
    ``u:dropped``                   lines the logging handler had to drop (``loghandler``)
    ``sources``                     set of the names of log sources read so far
    ``src:<name>``                  hash: a source's freshness: ``kind`` (``ingest`` | ``tail``
                                    | ``queue``), ``path``, ``read_at`` (epoch s, wall clock,
                                    when a line was last read), ``event_ts`` (newest event time
                                    read), ``lines`` (lines read in all)

Live pipeline (``pirus_bridge.queues``): for a queue ``<queue>`` (``q:loglines``, ``q:count``,
the category queues), the tag ``{<queue>}`` puts these keys in the queue's own Cluster slot (a
queue name with a tag of its own is used as it is: its tag decides)
    ``q:workers:{<queue>}``         set: the ids of the workers of the queue (the registry that
                                    orphan recovery reads instead of scanning the keyspace)
    ``q:processing:{<queue>}:<worker>``  list: items the worker has taken, not yet committed
    ``q:alive:{<queue>}:<worker>``  string: the worker's heartbeat (expires when it dies)

Elsewhere, with their own module's docstring
    ``ob:{gatherer}:…``             the outbox (``pirus_bridge.outbox``)
    ``q:…``                         the live pipeline's queues themselves (``pirus_bridge.queues``)
"""

from __future__ import annotations

import datetime
import functools

OBJECTITEMS = "objectitems"
BOTLIST = "botlist"
SALT = "salt"
BUNDLES = "bundles"
_EPOCH_DAY = datetime.date(1970, 1, 1)  # day 0 of the dv: / dd: sets

# Seed prefixes for entity keys, and the per-type set that lists them.
ENTITY_TYPES: dict[str, tuple[str, str]] = {
    # type name: (key prefix, per-type set)
    "name": ("n:", "names"),
    "institution": ("i:", "institutions"),
    "faculty": ("f:", "faculties"),
    "subject": ("s:", "subjects"),
    "keyphrase": ("k:", "keyphrases"),
    "type": ("type:", "types"),
    "collection": ("col:", "collections"),
    "thesis_type": ("tt:", "thesistypes"),
}

# Seed names for the processing counters, by line category.
CATEGORY_COUNTERS = {
    "bot": "u:bothits",
    "usage": "u:objectviews",
    "notfound": "u:fof",
    "other": "u:other",
    "unparsed": "u:unparsed",
}

# COUNTER R5 metric codes used as hash fields.
TII = "TII"  # Total_Item_Investigations
UII = "UII"  # Unique_Item_Investigations
TIR = "TIR"  # Total_Item_Requests
UIR = "UIR"  # Unique_Item_Requests
METRIC_NAMES = {
    TII: "Total_Item_Investigations",
    UII: "Unique_Item_Investigations",
    TIR: "Total_Item_Requests",
    UIR: "Unique_Item_Requests",
}


@functools.lru_cache(maxsize=65536)
def tag(item: str) -> str:
    """The Cluster hash tag of an item id (braces inside an id are replaced, so tags hold).

    Cached: counting names several keys of each item it sees."""
    return "{" + item.replace("{", "(").replace("}", ")") + "}"


def metadata(item: str) -> str:
    return f"md:{tag(item)}"


def resolution(kind: str, key: str) -> str:
    return f"rs:{kind}:{tag(key)}"


def item_entities(item: str) -> str:
    return f"e:{tag(item)}"


def entity_items(entity_key: str) -> str:
    return f"e:{entity_key}"


def bundle(name: str) -> str:
    return f"b:{name}"


def bundle_of(entity_key: str) -> str:
    return f"bundleof:{entity_key}"


def counter_metrics(item: str) -> str:
    return f"c:{tag(item)}"


def daily(item: str) -> str:
    return f"dly:{tag(item)}"


def dates(item: str, kind: str) -> str:
    """``dv:`` / ``dd:`` date sets; ``kind`` is ``v`` or ``d``."""
    return f"d{kind}:{tag(item)}"


def day_number(date: str) -> int:
    """The member of a ``dv:`` / ``dd:`` set for a UTC date ``YYYY-MM-DD``: days since
    1970-01-01."""
    return (datetime.date.fromisoformat(date) - _EPOCH_DAY).days


def day_of_number(number: int | bytes | str) -> str:
    """The UTC date ``YYYY-MM-DD`` of a ``dv:`` / ``dd:`` member."""
    return (_EPOCH_DAY + datetime.timedelta(days=int(number))).isoformat()


def totals(item: str, kind: str) -> str:
    """``t:views:`` / ``t:dls:`` totals; ``kind`` is ``v`` or ``d``."""
    return f"t:{'views' if kind == 'v' else 'dls'}:{tag(item)}"


def day_state(day: str, item: str) -> str:
    """``YYYY-MM-DD:{item}``: the item's dedupe hash for one UTC day (fields in the module doc)."""
    return f"{day}:{tag(item)}"


SOURCES = "sources"


def source_status(name: str) -> str:
    """``src:<name>``: a log source's freshness (fields in the module doc)."""
    return f"src:{name}"


def ingest_checkpoint(identity: str) -> str:
    return f"ingest:{identity}"


def tail_position(path: str) -> str:
    """``tail:<absolute path>``: a followed file's identity, offset and line."""
    return f"tail:{path}"


def ingest_lock(identity: str) -> str:
    return f"ingest:{identity}:lock"


PARKED = "parked"


def parked(kind: str, key: str) -> str:
    """``park:<kind>:{<id>}``: usage events waiting for the metadata provider's answer."""
    return f"park:{kind}:{tag(key)}"


def volume(day: str) -> str:
    """``vol:<YYYY-MM-DD>``: each user's usage lines of the day, for the volume rule."""
    return f"vol:{day}"


def volume_items(day: str) -> str:
    """``vol:<YYYY-MM-DD>:items``: the items with usage that day (the volume rule)."""
    return f"vol:{day}:items"


def accounting(month: str) -> str:
    """``acct:<YYYY-MM>``: the month's accounting of lines that are not usage."""
    return f"acct:{month}"


# Outbox keys: one gatherer's keys share the gatherer's hash tag.
def outbox(gatherer: str, part: str) -> str:
    """``ob:{gatherer}:<part>``; parts are documented in :mod:`pirus_bridge.outbox`."""
    return f"ob:{tag(gatherer)}:{part}"


def outbox_held(gatherer: str, run: str) -> str:
    """``ob:{gatherer}:held:<run>``: sorted set, message id → event time, of a bulk run's
    messages that a later line of the run may still supersede (``UsageStore.release_held``)."""
    return f"ob:{tag(gatherer)}:held:{run}"


def has_hash_tag(key: str) -> bool:
    """Whether Redis Cluster hashes only part of ``key``: a non-empty ``{…}`` in it (the first
    ``{`` and the next ``}``)."""
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


def _queue_key(part: str, queue: str) -> str:
    """``q:<part>:{<queue>}``: in the queue's Cluster slot. A queue name with a hash tag of its
    own (``q:bothits:{q:loglines}``) is used as it is, so its tag still decides the slot."""
    if has_hash_tag(queue):
        return f"q:{part}:{queue}"
    if "}" in queue:  # braces around it would end the tag early: another slot
        raise ValueError(f"queue name {queue!r}: a '}}' outside a hash tag is not supported")
    return f"q:{part}:{{{queue}}}"


def queue_workers(queue: str) -> str:
    """``q:workers:{<queue>}``: the queue's registry of worker ids."""
    return _queue_key("workers", queue)


def queue_processing(queue: str, worker: str) -> str:
    """``q:processing:{<queue>}:<worker>``: what the worker has taken and not committed."""
    return f"{_queue_key('processing', queue)}:{worker}"


def queue_alive(queue: str, worker: str) -> str:
    """``q:alive:{<queue>}:<worker>``: the worker's heartbeat."""
    return f"{_queue_key('alive', queue)}:{worker}"
