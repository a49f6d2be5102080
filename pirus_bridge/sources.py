"""Read access-log files as numbered lines with byte offsets, so a run can resume where it stopped.

:func:`open_log` opens a plain file, a gzip, bzip2 or xz file (recognised by its magic bytes,
whatever its name) or ``-`` for standard input (which may be compressed too). Iterating a
:class:`LogSource` yields ``(lineno, offset_after, text)`` for every line:

- ``lineno`` counts from 1 at the start of the (decompressed) stream, also after a resume;
- ``offset_after`` is the byte offset in the decompressed stream just after the line's newline,
  the value to store as "committed progress" and to pass back as ``start_offset`` later;
- ``text`` is the line decoded as UTF-8 with ``errors="replace"``, without its ``\\n`` (and
  without a ``\\r`` before it).

A last line without a newline is yielded too, with ``offset_after`` at the end of the stream.
Files are read in 1 MiB chunks; an all-ASCII chunk (the usual case, since web servers escape
other bytes) is decoded in one go. A line too long to parse (``log.max_line_bytes``) is not
kept whole, so memory stays bounded whatever the input. The bulk path takes the lines a chunk
at a time instead, as :class:`Block` values from :meth:`LogSource.blocks`, and works out offsets
only where it commits.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import sys
from collections.abc import Iterator
from itertools import accumulate
from types import TracebackType
from typing import BinaryIO

from pirus_bridge.exceptions import InputError

__all__ = ["HEAD_BYTES", "Block", "LogSource", "detect_compression", "open_log"]

CHUNK_SIZE = 1 << 20
HEAD_BYTES = 65536  # how much of a file's start :meth:`LogSource.head` reads
DEFAULT_MAX_LINE_BYTES = 16384  # the default of log.max_line_bytes
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError)


def detect_compression(head: bytes) -> str:
    """Name a stream's compression from its first bytes: gzip, bzip2, xz or plain."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "plain"


def _decompressor(raw: BinaryIO, compression: str) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "bzip2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if compression == "xz":
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    return raw


def _open_raw(path: str) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{path}: is a directory, not a log file") from e
    except PermissionError as e:
        raise InputError(f"{path}: permission denied") from e
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror or e}") from e


def _peek(raw: BinaryIO, n: int) -> bytes:
    """The first ``n`` bytes of ``raw`` without consuming them."""
    if raw.seekable():
        head = raw.read(n)
        raw.seek(-len(head), io.SEEK_CUR)
        return head
    peek = getattr(raw, "peek", None)
    if peek is None:
        raise InputError("standard input must be a buffered binary stream")
    return bytes(peek(n)[:n])


class Block:
    """Consecutive lines of a log, read in one go.

    ``lineno`` and ``offset`` are the line number and byte offset *before* the first line, so
    ``texts[i]`` is line ``lineno + i + 1``. ``ends`` holds the byte offset just after each
    line when that is not simply the running sum of ``len(text) + 1`` (lines with non-ASCII
    bytes or ``\\r\\n`` endings, a last line without a newline); else it is ``None``.
    """

    __slots__ = ("lineno", "offset", "texts", "ends")

    def __init__(self, lineno: int, offset: int, texts: list[str],
                 ends: list[int] | None = None) -> None:
        self.lineno = lineno
        self.offset = offset
        self.texts = texts
        self.ends = ends

    def __len__(self) -> int:
        return len(self.texts)

    def offset_after(self, count: int) -> int:
        """The byte offset just after the first ``count`` lines of the block."""
        return self.offset + self.span(0, count)

    def span(self, start: int, stop: int) -> int:
        """How many bytes lines ``start`` to ``stop`` (excluded) take, newlines included."""
        if stop <= start:
            return 0
        if self.ends is None:
            return sum(map(len, self.texts[start:stop])) + stop - start
        return self.ends[stop - 1] - (self.ends[start - 1] if start else self.offset)

    def __repr__(self) -> str:
        return f"Block(lineno={self.lineno}, offset={self.offset}, lines={len(self.texts)})"


def _read_upto(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream`` (fewer only at its end)."""
    out = bytearray()
    while len(out) < n:
        more = stream.read(n - len(out))
        if not more:
            break
        out += more
    return bytes(out)


def _decode(raw: bytes) -> str:
    """A line's bytes as text: UTF-8 with replacement, without a ``\\r`` before the newline."""
    if raw[-1:] == b"\r":
        raw = raw[:-1]
    return raw.decode("utf-8", "replace")


class LogSource:
    """An open log stream; iterate it once for ``(lineno, offset_after, text)`` tuples.

    ``size_hint`` is the size in bytes of the file on disk (the compressed size for a
    compressed file), ``None`` for standard input or a pipe; :meth:`position` is how many
    of those bytes have been read so far (compressed bytes for a compressed file, including the
    decompressor's read-ahead). Together they drive a progress bar. Use as a context manager or
    call :meth:`close`.
    """

    def __init__(self, name: str, raw: BinaryIO, *, path: str | None, owns_raw: bool,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.name = name
        # A line longer than this many characters is unparsed: once it passes 4× as many bytes
        # (UTF-8 takes at most 4 bytes a character) the rest of it is not kept, so one endless
        # line (a file of NULs, a broken writer) costs a bounded amount of memory.
        self._keep = 4 * max_line_bytes + 4
        self.path = path
        self._raw = raw
        self._owns_raw = owns_raw
        self.compression = detect_compression(_peek(raw, 8))
        self._stream = _decompressor(raw, self.compression)
        self._offset = 0  # decompressed bytes consumed
        self._lineno = 0  # lines before self._offset
        self._raw_read = 0  # bytes read, for position() when raw cannot tell()
        self._started = False
        self._head: bytes | None = None
        self.size_hint: int | None = None
        try:
            st = os.fstat(raw.fileno())
            if stat.S_ISREG(st.st_mode):
                self.size_hint = st.st_size
        except (OSError, AttributeError, io.UnsupportedOperation):
            pass

    @property
    def seekable(self) -> bool:
        """True for a plain regular file, where :meth:`skip_to` can seek instead of read."""
        return self.compression == "plain" and self.size_hint is not None

    def position(self) -> int:
        """Bytes of the underlying file read so far (see :class:`LogSource`)."""
        if self.size_hint is not None:
            try:
                return self._raw.tell()
            except OSError:
                pass
        return self._raw_read

    def head(self) -> bytes | None:
        """The first 64 KiB of the decompressed content (less if shorter); ``None`` for stdin.

        The same content gives the same head, plain or compressed. It is read through a second
        handle, so it does not disturb iteration.
        """
        if self.path is None:
            return None
        if self._head is None:
            raw = _open_raw(self.path)
            try:
                stream = _decompressor(raw, detect_compression(_peek(raw, 8)))
                self._head = _read_upto(stream, HEAD_BYTES)
            except _READ_ERRORS as e:
                raise InputError(f"{self.name}: cannot read: {e}") from e
            finally:
                raw.close()
        return self._head

    def lines_before(self, offset: int, count: int) -> list[str]:
        """The text of the (up to) ``count`` lines that end at byte ``offset`` of the
        decompressed content, as iteration would give them. Raises :class:`InputError` when
        the content is shorter than ``offset`` or ``offset`` is not at the end of a line."""
        if self._started:
            raise InputError(f"{self.name}: cannot look back after reading has started")
        self._started = True
        start = max(0, offset - CHUNK_SIZE)
        if self.seekable:
            self._raw.seek(start)
        else:
            skipped = 0
            while skipped < start:
                chunk = self._read(min(CHUNK_SIZE, start - skipped))
                if not chunk:
                    raise InputError(f"{self.name}: shorter than offset {offset}")
                skipped += len(chunk)
        data = _read_upto(self._stream, offset - start)
        if len(data) < offset - start:
            raise InputError(f"{self.name}: shorter than offset {offset}")
        if data and data[-1:] != b"\n" and self._stream.read(1):
            raise InputError(f"{self.name}: offset {offset} is not at the end of a line")
        pieces = data.split(b"\n")
        if data[-1:] == b"\n":
            pieces.pop()
        if start > 0:
            pieces = pieces[1:]  # the window's first line may be cut
        return [_decode(p) for p in pieces[-count:]] if count else []

    def skip_to(self, offset: int, lineno: int | None = None) -> None:
        """Resume at byte ``offset`` of the decompressed stream (an ``offset_after`` seen before).

        With ``lineno`` (the line number that ended at ``offset``) a plain file seeks straight
        there; without it the skipped part is read to count its newlines, so line numbers stay
        right (cheap next to parsing). Compressed files and stdin are always read and discarded.
        Must be called before iterating. Raises :class:`InputError` when the stream is shorter
        than ``offset`` (truncated or replaced) or ``offset`` is neither the start of a line nor
        the end of the stream (a last line without newline was yielded, then the file grew).
        """
        if self._started:
            raise InputError(f"{self.name}: cannot skip after reading has started")
        if offset < 0:
            raise InputError(f"{self.name}: negative resume offset {offset}")
        if self.seekable and lineno is not None:
            if self.size_hint is None or offset > self.size_hint:
                raise InputError(f"{self.name}: shorter than resume offset {offset}")
            self._raw.seek(max(offset - 1, 0))
            if 0 < offset < self.size_hint and self._raw.read(1) != b"\n":
                raise InputError(f"{self.name}: resume offset {offset} is not at a line start")
            self._raw.seek(offset)
            self._offset, self._lineno = offset, lineno
            return
        if offset < self._offset:
            if not self.seekable:
                raise InputError(f"{self.name}: cannot go back to offset {offset}")
            self._raw.seek(0)
            self._offset = self._lineno = 0
        last = b"\n"
        while self._offset < offset:
            chunk = self._read(min(CHUNK_SIZE, offset - self._offset))
            if not chunk:
                raise InputError(f"{self.name}: shorter than resume offset {offset}")
            self._offset += len(chunk)
            self._lineno += chunk.count(b"\n")
            last = chunk[-1:]
        if last != b"\n" and self._read(1):  # the end of a last line without newline is fine
            raise InputError(f"{self.name}: resume offset {offset} is not at a line start")
        if lineno is not None:
            self._lineno = lineno

    def _read(self, n: int) -> bytes:
        try:
            chunk = self._stream.read(n)
        except _READ_ERRORS as e:
            raise InputError(
                f"{self.name}: cannot read after byte {self._offset} "
                f"(truncated or corrupt {self.compression} data?): {e}"
            ) from e
        self._raw_read += len(chunk)
        return chunk

    def __iter__(self) -> Iterator[tuple[int, int, str]]:
        return self._lines(self.blocks())

    @staticmethod
    def _lines(blocks: Iterator[Block]) -> Iterator[tuple[int, int, str]]:
        for block in blocks:
            offset, lineno, ends = block.offset, block.lineno, block.ends
            for i, text in enumerate(block.texts):
                offset = offset + len(text) + 1 if ends is None else ends[i]
                lineno += 1
                yield lineno, offset, text

    def blocks(self) -> Iterator[Block]:
        """The lines a chunk at a time, as :class:`Block` values (the bulk path's way in)."""
        if self._started:
            raise InputError(f"{self.name}: a log source can be read only once")
        self._started = True
        return self._blocks()

    def _blocks(self) -> Iterator[Block]:
        offset, lineno = self._offset, self._lineno
        keep = self._keep
        rest = b""
        extra = 0  # bytes of the unfinished line ``rest`` dropped beyond ``keep``
        while True:
            chunk = self._read(CHUNK_SIZE)
            if not chunk:
                break
            if rest:
                chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            rest = chunk[cut:]
            if cut:
                body = chunk[:cut]
                if not extra and body.isascii() and b"\r" not in body:
                    texts = body.decode("ascii").split("\n")
                    texts.pop()
                    block = Block(lineno, offset, texts)
                else:
                    raws = body.split(b"\n")
                    raws.pop()
                    sizes = [len(raw) + 1 for raw in raws]
                    sizes[0] += extra  # the first line was longer than what is kept of it
                    ends = list(accumulate(sizes, initial=offset))
                    block = Block(lineno, offset, [_decode(raw) for raw in raws], ends[1:])
                offset += cut + extra
                extra = 0
                lineno += len(block.texts)
                self._offset, self._lineno = offset, lineno
                yield block
            if len(rest) > keep:  # an unfinished line too long to parse: drop its middle
                extra += len(rest) - keep
                rest = rest[:keep]
        if rest:
            end = offset + len(rest) + extra
            yield Block(lineno, offset, [_decode(rest)], [end])
            offset = end
            lineno += 1
        self._offset, self._lineno = offset, lineno

    def close(self) -> None:
        """Close the stream (standard input itself is left open)."""
        if self._stream is not self._raw:
            self._stream.close()
        if self._owns_raw:
            self._raw.close()

    def __enter__(self) -> LogSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LogSource({self.name!r}, compression={self.compression!r})"


def open_log(
    path: str,
    *,
    start_offset: int = 0,
    start_lineno: int | None = None,
    stdin: BinaryIO | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> LogSource:
    """Open a log file, or standard input for ``"-"``, and position it at ``start_offset``.

    ``start_offset``/``start_lineno`` resume a previous run (see :meth:`LogSource.skip_to`).
    ``stdin`` replaces ``sys.stdin.buffer`` for ``"-"`` (tests, or a pipe the caller holds);
    standard input cannot be resumed. ``max_line_bytes`` is ``log.max_line_bytes``: of a longer
    line only the first ``4 × max_line_bytes`` bytes are kept (it is unparsed either way, and its
    offsets stay exact). Raises :class:`InputError` with a one-line message when
    the file is missing, unreadable or shorter than ``start_offset``.
    """
    if path == "-":
        if start_offset:
            raise InputError("standard input cannot be resumed at an offset")
        stream = stdin if stdin is not None else sys.stdin.buffer
        return LogSource("<stdin>", stream, path=None, owns_raw=False,
                         max_line_bytes=max_line_bytes)
    source = LogSource(path, _open_raw(path), path=path, owns_raw=True,
                       max_line_bytes=max_line_bytes)
    if start_offset or start_lineno:
        try:
            source.skip_to(start_offset, start_lineno)
        except BaseException:
            source.close()
            raise
    return source
