"""Following a growing log file across rotation, from a saved position.

A :class:`Follower` yields complete lines as they are written, and ``None`` whenever it has
been idle for a tick (so the caller can commit and flush). Its :meth:`Follower.position` is
saved by the caller in the same Redis transaction as the lines' effects; :meth:`Follower.resume`
starts from such a position, so a restart — even after SIGKILL — neither skips nor repeats a line.

The file's identity is the hash of its first line, which does not change as the file grows.

Rotation:

* rename (logrotate's default, ``access.log`` → ``access.log.1`` + a new ``access.log``): the
  old file is read to its end, then the new one from its start;
* copytruncate (the file is copied, then truncated in place): the lines written between our
  last read and the copy are read from the copy (found by its first line), then the truncated
  file from its start;
* rotated while we were stopped: the old file is found in the same folder by its first line
  (``.gz``/``.bz2`` too), finished from the saved offset, then the current file is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import redis

from pirus_bridge import keys
from pirus_bridge.chain import IngestSummary, Stages
from pirus_bridge.config import Config
from pirus_bridge.sources import DEFAULT_MAX_LINE_BYTES, Block, open_log
from pirus_bridge.store import text

log = logging.getLogger(__name__)

IDENTITY_BYTES = 4096  # a first line longer than this is identified by its first 4 KiB


@dataclass(frozen=True)
class Position:
    """Where a follower is: the file (by first-line hash), byte offset and line number."""

    identity: str
    offset: int
    line: int

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Position:
        return cls(str(d["identity"]), int(d["offset"]), int(d["line"]))


def first_line_identity(head: bytes) -> str | None:
    """The identity of a file from its first bytes; None until its first line is complete."""
    end = head.find(b"\n")
    if end < 0 and len(head) < IDENTITY_BYTES:
        return None
    line = head[: end if end >= 0 else IDENTITY_BYTES]
    return _identity(line.rstrip(b"\r").decode("utf-8", "replace"))


def _identity(first_line: str) -> str:
    return hashlib.sha1(first_line[:IDENTITY_BYTES].encode()).hexdigest()


def identity_of(path: Path) -> str | None:
    """The identity of a (possibly compressed) file, from its first complete line."""
    try:
        with open_log(str(path)) as src:
            for _, _, text in src:
                return _identity(text)
    except Exception:  # an unreadable or half-written rotated file is simply not a match
        return None
    return None


class Follower:
    """Yields each new complete line as a one-line :class:`~pirus_bridge.sources.Block`, or
    ``None`` on idle. One line at a time: :meth:`position` must not run ahead of what the
    consumer has taken."""

    def __init__(
        self,
        path: str | Path,
        *,
        poll_s: float = 0.25,
        idle_ticks: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.path = Path(path)
        # of a line longer than log.max_line_bytes (unparsed either way) only the start is kept
        self.keep_bytes = 4 * max_line_bytes + 4
        self.poll_s = poll_s
        self.idle_ticks = idle_ticks
        self.sleep = sleep
        self._f: BinaryIO | None = None
        self._inode: int | None = None
        self.identity: str | None = None
        self.offset = 0
        self.line = 0
        self._pending: list[tuple[Block, Position]] = []
        self._last: Position | None = None
        self.stopping = False

    def close(self) -> None:
        self.stopping = True
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def position(self) -> Position | None:
        """The position after the last line yielded: what to save with its effects."""
        return self._last

    # -- starting ------------------------------------------------------------------------------

    def resume(self, saved: Position | None) -> None:
        """Start at ``saved`` if it is the current file; catch up on a rotated one first."""
        current = identity_of(self.path) if self.path.exists() else None
        self._last = saved
        if saved is None:
            self._open(0, 0)
            return
        if current == saved.identity:
            size = self.path.stat().st_size
            if size >= saved.offset:
                self._open(saved.offset, saved.line)
                return
            self._catch_up(saved)  # truncated while we were away: the copy has the rest
            self._open(0, 0)
            return
        self._catch_up(saved)
        self._open(0, 0)

    def _catch_up(self, saved: Position) -> None:
        """Queue the lines after ``saved`` from the rotated file that has its identity."""
        for candidate in sorted(self.path.parent.glob(self.path.name + "*")):
            if candidate == self.path or identity_of(candidate) != saved.identity:
                continue
            with open_log(str(candidate)) as src:
                src.skip_to(saved.offset, saved.line)
                before = saved.offset
                for n, off, text in src:
                    block = Block(n - 1, before, [text], [off])
                    self._pending.append((block, Position(saved.identity, off, n)))
                    before = off
            log.info("caught up %d line(s) from rotated %s", len(self._pending), candidate)
            return
        log.warning("rotated file of %s not found; lines after line %d of it are lost",
                    self.path, saved.line)

    def _open(self, offset: int, line: int) -> None:
        if self._f is not None:
            self._f.close()
        self._f = None
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except FileNotFoundError:
            self._inode, self.identity, self.offset, self.line = None, None, 0, 0
            return
        self._f = f
        self._inode = os.fstat(f.fileno()).st_ino
        f.seek(offset)
        self.offset, self.line = offset, line
        self.identity = first_line_identity(os.pread(f.fileno(), IDENTITY_BYTES + 1, 0))

    # -- following -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Block | None]:
        idle = 0
        while not self.stopping:
            if self._pending:
                yield from self._drain_pending()
                continue
            got = False
            for item in self._read_available():
                got = True
                yield item
            if got:
                idle = 0
                continue
            if self._rotated():
                continue
            idle += 1
            if idle >= self.idle_ticks:
                idle = 0
                yield None
            self.sleep(self.poll_s)

    def _drain_pending(self) -> Iterator[Block]:
        # Lines of a rotated file keep that file's position until they are all yielded, so a
        # crash in between resumes in the rotated file, not past it.
        pending, self._pending = self._pending, []
        for block, pos in pending:
            self._last = pos
            yield block

    def _read_available(self) -> Iterator[Block]:
        f = self._f
        if f is None:
            self._open(0, 0)
            f = self._f
            if f is None:
                return
        keep = self.keep_bytes
        while True:
            raw = f.readline(keep)
            if not raw:
                return
            size = len(raw)
            if not raw.endswith(b"\n"):
                if size < keep:  # half-written: wait for the rest
                    f.seek(self.offset)
                    return
                rest = _skip_line(f)  # too long to parse: keep only its start
                if rest is None:  # its end is not written yet
                    f.seek(self.offset)
                    return
                size += rest
            text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if self.identity is None:
                self.identity = _identity(text) if self.offset == 0 else first_line_identity(
                    os.pread(f.fileno(), IDENTITY_BYTES + 1, 0))
            before = self.offset
            self.offset += size
            self.line += 1
            if self.identity is not None:
                self._last = Position(self.identity, self.offset, self.line)
            yield Block(self.line - 1, before, [text], [self.offset])

    def _rotated(self) -> bool:
        """At end of file: has the file been renamed away or truncated? Switch if so."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed, and the new file does not exist yet
        if self._f is None or st.st_ino != self._inode:
            if self._f is not None and self.identity is not None:
                # anything written to the old file before the rename
                rest = list(self._read_available())
                self._pending += [
                    (b, Position(self.identity, b.offset_after(1), b.lineno + 1)) for b in rest
                ]
            self._open(0, 0)
            return self._f is not None
        if st.st_size < self.offset:
            if self.identity is not None:
                self._catch_up(Position(self.identity, self.offset, self.line))
            self._open(0, 0)
            return True
        return False


def _skip_line(f: BinaryIO) -> int | None:
    """Read past the end of the current line; how many bytes that took, or None when the
    line's end is not in the file yet."""
    skipped = 0
    while True:
        more = f.readline(1 << 20)
        if not more:
            return None
        skipped += len(more)
        if more.endswith(b"\n"):
            return skipped


class TailCheckpoint:
    """A followed file's position, under ``tail:<absolute path>``.

    The position written is the follower's own (which may still be inside a rotated file), not
    the offset the loop passes, so a restart resumes exactly after the last committed line.
    """

    def __init__(self, path: Path, follower: Follower) -> None:
        self.key = keys.tail_position(str(path.resolve()))
        self.follower = follower

    def saved_position(self, r: redis.Redis) -> Position | None:
        raw = r.hgetall(self.key)
        if not raw or b"identity" not in raw:
            return None
        return Position.from_dict({text(k): text(v) for k, v in raw.items()})

    def write(self, pipe: redis.client.Pipeline, offset: int, line: int,
              last_texts: Sequence[str]) -> None:
        pos = self.follower.position()
        if pos is None:
            return
        pipe.hset(self.key, mapping={
            "identity": pos.identity, "offset": pos.offset, "line": pos.line,
            "updated": int(time.time()),
        })


def follow(cfg: Config, r: redis.Redis, path: str | Path, *, stages: Stages | None = None,
           follower: Follower | None = None) -> IngestSummary:
    """Follow ``path`` into the usage model until ``follower.stopping`` is set (``tail``)."""
    from pirus_bridge.ingest import Ingester

    path = Path(path)
    follower = follower or Follower(path, max_line_bytes=cfg.log.max_line_bytes)
    checkpoint = TailCheckpoint(path, follower)
    follower.resume(checkpoint.saved_position(r))
    summary = IngestSummary()
    try:
        Ingester(cfg, r, stages=stages).run(follower, checkpoint, summary, name=str(path),
                                            kind="tail")
    finally:
        follower.close()
    return summary
