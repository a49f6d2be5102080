"""Log sources: plain and compressed files, stdin, offsets, resume, heads, look-back, errors."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pirus_bridge import sources
from pirus_bridge.exceptions import InputError
from pirus_bridge.sources import HEAD_BYTES, detect_compression, open_log

ROOT = Path(__file__).resolve().parent.parent
CONTENT = (
    b'192.0.2.1 - - [01/Jan/2024:00:00:00 +0000] "GET /1/ HTTP/1.1" 200 5 "-" "ua"\n'
    b"second line \xc3\xa9t\xc3\xa9\n"  # UTF-8
    b"bad bytes \xff\xfe here\n"
    b"\n"
    b"crlf line\r\n"
    b"last line without newline"
)
EXPECTED = [
    (1, 77, '192.0.2.1 - - [01/Jan/2024:00:00:00 +0000] "GET /1/ HTTP/1.1" 200 5 "-" "ua"'),
    (2, 95, "second line été"),
    (3, 113, "bad bytes \ufffd\ufffd here"),
    (4, 114, ""),
    (5, 125, "crlf line"),
    (6, 150, "last line without newline"),
]
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda b: b,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}


def write(tmp_path: Path, data: bytes, compression: str, name: str | None = None) -> str:
    path = tmp_path / (name or f"access.{compression}")
    path.write_bytes(COMPRESSORS[compression](data))
    return str(path)


def test_expected_table_matches_content() -> None:
    assert EXPECTED[-1][1] == len(CONTENT)


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_open_log_reads_every_line_with_offsets(tmp_path: Path, compression: str) -> None:
    with open_log(write(tmp_path, CONTENT, compression)) as source:
        assert source.compression == compression
        assert list(source) == EXPECTED


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 20])
@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_open_log_lines_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, compression: str
) -> None:
    monkeypatch.setattr(sources, "CHUNK_SIZE", chunk)
    with open_log(write(tmp_path, CONTENT, compression)) as source:
        assert list(source) == EXPECTED


ASCII = b"".join(b"line %d%s\n" % (i, b"x" * (i % 7)) for i in range(40))


@pytest.mark.parametrize("chunk", [1, 16, 100, 1 << 20])
@pytest.mark.parametrize("content", [CONTENT, ASCII], ids=["mixed", "ascii"])
def test_blocks_give_every_line_and_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, content: bytes
) -> None:
    monkeypatch.setattr(sources, "CHUNK_SIZE", chunk)
    with open_log(write(tmp_path, content, "plain")) as source:
        expected = list(source)
    with open_log(write(tmp_path, content, "plain")) as source:
        blocks = list(source.blocks())
    got = []
    for block in blocks:
        for i, text in enumerate(block.texts):
            got.append((block.lineno + i + 1, block.offset_after(i + 1), text))
        # any cut of a block: the spans of its parts add up to the whole
        for cut in range(len(block) + 1):
            assert block.span(0, cut) + block.span(cut, len(block)) == block.span(0, len(block))
        assert block.offset + block.span(0, len(block)) == block.offset_after(len(block))
    assert got == expected
    assert [b.lineno for b in blocks[1:]] == [b.lineno + len(b) for b in blocks[:-1]]
    assert [b.offset for b in blocks[1:]] == [b.offset_after(len(b)) for b in blocks[:-1]]


@pytest.mark.parametrize(
    ("name", "compression"),
    [("access.log", "gzip"), ("access.log.gz", "plain"), ("access.gz", "bzip2"), ("x", "xz")],
)
def test_open_log_detects_compression_by_magic(tmp_path: Path, name: str, compression: str) -> None:
    with open_log(write(tmp_path, CONTENT, compression, name)) as source:
        assert source.compression == compression
        assert list(source) == EXPECTED


@pytest.mark.parametrize(
    ("head", "expected"),
    [(b"\x1f\x8b\x08", "gzip"), (b"BZh9", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"", "plain"),
     (b"1.2.3.4 - -", "plain"), (b"\x1f", "plain")],
)  # fmt: skip
def test_detect_compression(head: bytes, expected: str) -> None:
    assert detect_compression(head) == expected


@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_open_log_stdin_from_a_stream(compression: str) -> None:
    stream = io.BytesIO(COMPRESSORS[compression](CONTENT))
    with open_log("-", stdin=stream) as source:
        assert source.head() is None
        assert source.size_hint is None
        assert list(source) == EXPECTED
        assert source.position() > 0
    assert not stream.closed  # stdin is not ours to close


@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_open_log_real_stdin_pipe(compression: str) -> None:
    code = (
        "import sys; from pirus_bridge.sources import open_log\n"
        "with open_log('-') as s:\n"
        "    for n, off, text in s: print(n, off, ascii(text))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=COMPRESSORS[compression](CONTENT),
        capture_output=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert done.stdout.decode().splitlines() == [f"{n} {o} {ascii(t)}" for n, o, t in EXPECTED]


def test_open_log_stdin_cannot_resume() -> None:
    with pytest.raises(InputError, match="standard input"):
        open_log("-", start_offset=10, stdin=io.BytesIO(CONTENT))


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_head_same_for_plain_and_compressed(tmp_path: Path, compression: str) -> None:
    plain = open_log(write(tmp_path, CONTENT, "plain", "a"))
    other = open_log(write(tmp_path, CONTENT, compression, "b"))
    with plain, other:
        assert plain.head() == other.head() == CONTENT
        assert list(other) == EXPECTED  # reading the head does not disturb reading


@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_head_is_the_first_64_kib(tmp_path: Path, compression: str) -> None:
    big = CONTENT.replace(b"last line without newline", b"") * 1000
    assert len(big) > HEAD_BYTES
    with open_log(write(tmp_path, big, compression, "log")) as source:
        assert source.head() == big[:HEAD_BYTES]


@pytest.mark.parametrize("compression", COMPRESSORS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_lines_before_an_offset_are_the_lines_iteration_gives(
    tmp_path: Path, compression: str, n: int
) -> None:
    path = write(tmp_path, CONTENT, compression, "log")
    offset = EXPECTED[n - 1][1]
    with open_log(path) as source:
        assert source.lines_before(offset, 3) == [t for _, _, t in EXPECTED[max(0, n - 3):n]]


@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_lines_before_an_offset_far_into_a_big_file(tmp_path: Path, compression: str) -> None:
    lines = [f"line {i:07d}" for i in range(300_000)]
    path = write(tmp_path, "\n".join(lines).encode() + b"\n", compression, "log")
    offset = sum(len(t) + 1 for t in lines[:250_000])
    with open_log(path) as source:
        assert source.lines_before(offset, 4) == lines[249_996:250_000]


def test_lines_before_refuses_offsets_past_the_end_or_inside_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, CONTENT, "plain", "log")
    with open_log(path) as source, pytest.raises(InputError, match="shorter"):
        source.lines_before(len(CONTENT) + 10, 2)
    with open_log(path) as source, pytest.raises(InputError, match="end of a line"):
        source.lines_before(80, 2)


@pytest.mark.parametrize("with_lineno", [True, False])
@pytest.mark.parametrize("compression", COMPRESSORS)
@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_open_log_resume_gives_exactly_the_rest(
    tmp_path: Path, compression: str, index: int, with_lineno: bool
) -> None:
    lineno, offset, _ = EXPECTED[index]
    path = write(tmp_path, CONTENT, compression)
    with open_log(path, start_offset=offset, start_lineno=lineno if with_lineno else None) as s:
        assert list(s) == EXPECTED[index + 1 :]


@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_skip_to_start_of_file(tmp_path: Path, compression: str) -> None:
    with open_log(write(tmp_path, CONTENT, compression)) as source:
        source.skip_to(0, 0)
        assert list(source) == EXPECTED


@pytest.mark.parametrize("compression", ["plain", "gzip"])
@pytest.mark.parametrize("with_lineno", [True, False])
@pytest.mark.parametrize(
    ("offset", "message"), [(5, "not at a line start"), (10_000, "shorter than")]
)
def test_open_log_resume_rejects_bad_offsets(
    tmp_path: Path, compression: str, with_lineno: bool, offset: int, message: str
) -> None:
    path = write(tmp_path, CONTENT, compression)
    with pytest.raises(InputError, match=message):
        open_log(path, start_offset=offset, start_lineno=3 if with_lineno else None)


def test_skip_to_after_reading_is_refused(tmp_path: Path) -> None:
    with open_log(write(tmp_path, CONTENT, "plain")) as source:
        next(iter(source))
        with pytest.raises(InputError, match="after reading"):
            source.skip_to(77)


def test_open_log_missing_file_names_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.log")
    with pytest.raises(InputError, match="nope.log: no such file"):
        open_log(path)


def test_open_log_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        open_log(str(tmp_path))


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz"])
def test_open_log_truncated_archive_is_an_input_error(tmp_path: Path, compression: str) -> None:
    data = COMPRESSORS[compression](CONTENT * 50)
    path = tmp_path / "cut"
    path.write_bytes(data[: len(data) // 2])
    with open_log(str(path)) as source, pytest.raises(InputError, match="cut: cannot read"):
        list(source)


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_position_reaches_size_hint(tmp_path: Path, compression: str) -> None:
    path = write(tmp_path, CONTENT * 20, compression)
    with open_log(path) as source:
        assert source.size_hint == Path(path).stat().st_size
        assert source.position() == 0
        for _ in source:
            pass
        assert source.position() == source.size_hint


def test_open_log_empty_file(tmp_path: Path) -> None:
    with open_log(write(tmp_path, b"", "plain")) as source:
        assert list(source) == []
        assert source.head() == b""


def test_open_log_iterates_once(tmp_path: Path) -> None:
    with open_log(write(tmp_path, CONTENT, "plain")) as source:
        list(source)
        with pytest.raises(InputError, match="only once"):
            iter(source)


# --- endless lines ----------------------------------------------------------------------------


def test_an_endless_line_costs_bounded_memory_and_keeps_exact_offsets(tmp_path: Path) -> None:
    """A 128 MiB line of NULs, then an ordinary line: both come out, the first cut short (it is
    unparsed anyway), with exact offsets, and reading never holds more than a few MB."""
    import tracemalloc

    from pirus_bridge.logparse import LogFormat

    size = 128 << 20
    normal = '192.0.2.1 - - [14/Oct/2026:10:00:00 +0000] "GET /1234/ HTTP/1.1" 200 5 "-" "UA"'
    path = tmp_path / "nul.log"
    with path.open("wb") as f:
        zeros = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            f.write(zeros)
        f.write(b"\n" + normal.encode() + b"\n" + b"\0" * 300_000)  # and an unfinished one
    tracemalloc.start()
    try:
        with open_log(str(path), max_line_bytes=16384) as src:
            got = [(n, off, len(text), text if len(text) < 200 else "") for n, off, text in src]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert got == [
        (1, size + 1, 4 * 16384 + 4, ""),
        (2, size + 1 + len(normal) + 1, len(normal), normal),
        (3, path.stat().st_size, 4 * 16384 + 4, ""),
    ]
    fmt = LogFormat.compile("combined", max_line_bytes=16384)
    with open_log(str(path), max_line_bytes=16384) as src:
        parsed = [fmt.parse(text) for _, _, text in src]
    assert parsed[0] is None and parsed[1] is not None and parsed[2] is None
    with open_log(str(path), start_offset=size + 1, start_lineno=1) as src:  # resume after it
        assert [text for _, _, text in src][0] == normal


def test_long_lines_within_a_chunk_are_kept_whole(tmp_path: Path) -> None:
    long = "x" * 100_000
    path = tmp_path / "long.log"
    path.write_text(f"{long}\nshort\n")
    with open_log(str(path), max_line_bytes=256) as src:
        got = [(n, off, text) for n, off, text in src]
    assert got == [(1, 100_001, long), (2, 100_007, "short")]
