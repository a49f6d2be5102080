"""Where a bulk ingest of a log file stands, so a file read again is recognised and resumed.

A log file is recognised by its content, not its name: a renamed, rotated or recompressed copy
is the same stream; a file that grew is the same stream with more lines. Under ``ingest:<id>``,
where ``id`` is the hash of the file's first line (which does not change as the file grows),
each *stream* that starts with that line has an entry: how far it was counted (byte offset in
the decompressed content and line number) and two digests that tell it from another stream with
the same first line — of its first 64 KiB (or less: up to the offset) and of the last lines
before the offset. A file resumes at the furthest entry both digests agree with; else it is a new
stream, read from its start. Entries are written in the same transaction as the counts of the
lines before the offset, so a run killed at any point resumes exactly there.

One stream is read by one run at a time: ``ingest:<id>:lock`` (a lease, renewed at every
commit) makes a second run of the same file wait, then resume where the first stopped.
Overlapping cron runs therefore count a file once. Even without the lock no line would be
counted twice (the counting script knows every usage line it counted while its day is open:
``counter.Hasher.line_id``); the lock keeps the line accounting of the other categories exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import redis

from pirus_bridge import keys
from pirus_bridge.exceptions import InputError
from pirus_bridge.sources import open_log
from pirus_bridge.store import text

TAIL_LINES = 8  # lines before the offset whose text the tail digest covers
MAX_ENTRIES = 16  # streams remembered per first line; the least recently written go first
KEEP_DAYS = 400  # a checkpoint not written for this long is forgotten
LEASE_S = 60


@dataclass(frozen=True)
class Entry:
    """One stream's progress."""

    offset: int
    line: int
    head: str  # digest of the content's bytes [0, min(offset, HEAD_BYTES))
    tail: str  # digest of the text of the (up to) TAIL_LINES lines before the offset
    file: str
    updated: int


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def tail_digest(texts: Sequence[str]) -> str:
    """The digest of the last lines before an offset (their decoded text)."""
    return _digest("\n".join(texts[-TAIL_LINES:]).encode("utf-8", "surrogatepass"))


def first_line_identity(head: bytes) -> str:
    """The stream key: the hash of the first line (of at most 4 KiB) of the content."""
    end = head.find(b"\n")
    line = head[: end if 0 <= end < 4096 else 4096].rstrip(b"\r")
    return hashlib.sha1(line).hexdigest()


class FileCheckpoint:
    """The checkpoint entries of the streams that start with one first line, and its lock."""

    def __init__(self, path: str, head: bytes) -> None:
        self.path = path
        self.head = head  # the content's first HEAD_BYTES (fewer if it is shorter)
        identity = first_line_identity(head)
        self.key = keys.ingest_checkpoint(identity)
        self.lock_key = keys.ingest_lock(identity)
        self.entry_id: str | None = None  # this stream's entry, once known
        self._token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    # -- the lock --------------------------------------------------------------------------

    def acquire(self, r: redis.Redis, *, waiting: Callable[[str], None] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> None:
        """Take the stream's lease, waiting while another run holds it (``waiting`` is told
        who holds it, once)."""
        told = False
        while not r.set(self.lock_key, self._token, nx=True, ex=LEASE_S):
            holder = r.get(self.lock_key)
            if holder is not None and not told and waiting is not None:
                waiting(text(holder))
                told = True
            sleep(0.2)

    def renew(self, pipe: redis.client.Pipeline) -> None:
        pipe.expire(self.lock_key, LEASE_S)

    def release(self, r: redis.Redis) -> None:
        if r.get(self.lock_key) == self._token.encode():
            r.delete(self.lock_key)

    # -- entries ---------------------------------------------------------------------------

    def entries(self, r: redis.Redis) -> dict[str, Entry]:
        out = {}
        for field, value in r.hgetall(self.key).items():
            try:
                out[text(field)] = Entry(**json.loads(value))
            except (ValueError, TypeError):
                continue  # not an entry of this format: not a resume point
        return out

    def find(self, r: redis.Redis) -> Entry | None:
        """The furthest entry this file's content agrees with; None for a new stream."""
        for entry_id, entry in sorted(self.entries(r).items(), key=lambda kv: -kv[1].offset):
            if self._matches(entry):
                self.entry_id = entry_id
                return entry
        return None

    def _matches(self, entry: Entry) -> bool:
        if _digest(self.head[: entry.offset]) != entry.head:
            return False
        try:
            with open_log(self.path) as src:
                texts = src.lines_before(entry.offset, TAIL_LINES)
        except InputError:
            return False  # shorter than the entry, or not cut there: another stream
        return tail_digest(texts) == entry.tail

    def write(self, pipe: redis.client.Pipeline, offset: int, line: int,
              last_texts: Sequence[str]) -> None:
        """Queue this stream's entry at ``offset``; ``last_texts`` are the lines before it."""
        if self.entry_id is None:
            self.entry_id = secrets.token_hex(6)
        entry = Entry(offset, line, _digest(self.head[:offset]), tail_digest(last_texts),
                      self.path, int(time.time()))
        pipe.hset(self.key, self.entry_id, json.dumps(asdict(entry), separators=(",", ":")))
        pipe.expire(self.key, KEEP_DAYS * 86400)

    def prune(self, r: redis.Redis) -> None:
        """Keep the most recently written :data:`MAX_ENTRIES` entries."""
        found = self.entries(r)
        if len(found) > MAX_ENTRIES:
            old = sorted(found, key=lambda k: found[k].updated)[: len(found) - MAX_ENTRIES]
            r.hdel(self.key, *old)
