"""Following a growing log across rotation (the file side of ``tail``)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pirus_bridge.sources import Block
from pirus_bridge.tail import Follower, Position

OPEN: list[Follower] = []


@pytest.fixture(autouse=True)
def close_followers() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def lines(n: int, start: int = 0, tag: str = "line") -> str:
    return "".join(f"{tag} {i}\n" for i in range(start, start + n))


def take(it: Iterator[Block | None], n: int) -> list[str]:
    """The next ``n`` lines from a follower (idle ticks skipped, bounded)."""
    out: list[str] = []
    for _ in range(n * 4 + 20):
        item = next(it)
        if item is not None:
            out.extend(item.texts)
            if len(out) == n:
                return out
    return out


def follower(path: Path, saved: Position | None = None) -> tuple[Follower, Iterator]:
    f = Follower(path, poll_s=0, idle_ticks=1, sleep=lambda s: None)
    f.resume(saved)
    OPEN.append(f)
    return f, iter(f)


def test_follow_growing_file_and_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(lines(3))
    f, it = follower(log)
    assert take(it, 3) == ["line 0", "line 1", "line 2"]
    with log.open("a") as w:
        w.write("line 3\nhalf")
    assert take(it, 1) == ["line 3"]
    assert next(it) is None  # the half line is not yielded
    with log.open("a") as w:
        w.write(" done\n")
    assert take(it, 1) == ["half done"]
    pos = f.position()
    assert pos is not None and pos.line == 5 and pos.offset == log.stat().st_size


def test_follow_rename_rotation(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(lines(2))
    f, it = follower(log)
    assert take(it, 2) == ["line 0", "line 1"]
    with log.open("a") as w:
        w.write("line 2\n")  # written just before the rename, not yet read
    os.rename(log, tmp_path / "access.log.1")
    log.write_text(lines(2, tag="new"))
    assert take(it, 3) == ["line 2", "new 0", "new 1"]


def test_follow_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(lines(3))
    f, it = follower(log)
    assert take(it, 3) == ["line 0", "line 1", "line 2"]
    with log.open("a") as w:
        w.write("line 3\n")  # not read before the copy
    (tmp_path / "access.log.1").write_bytes(log.read_bytes())
    log.write_text("")  # truncate
    assert take(it, 1) == ["line 3"]  # recovered from the copy
    with log.open("a") as w:
        w.write("after 0\n")
    assert take(it, 1) == ["after 0"]


def test_resume_at_saved_position(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(lines(5))
    f, it = follower(log)
    take(it, 3)
    saved = f.position()
    g, it2 = follower(log, saved)
    assert take(it2, 2) == ["line 3", "line 4"]


def test_resume_after_rotation_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(lines(4))
    f, it = follower(log)
    take(it, 2)
    saved = f.position()
    # while stopped: rotated and compressed, and a new file started
    with gzip.open(tmp_path / "access.log.1.gz", "wb") as z:
        z.write(log.read_bytes())
    log.unlink()
    log.write_text(lines(2, tag="new"))
    g, it2 = follower(log, saved)
    assert take(it2, 4) == ["line 2", "line 3", "new 0", "new 1"]
    # the position stays in the rotated file until its lines are all handed out
    g2, it3 = follower(log, saved)
    take(it3, 1)
    mid = g2.position()
    assert mid is not None and mid.identity == saved.identity and mid.line == 3


def test_file_that_does_not_exist_yet(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    f, it = follower(log)
    assert next(it) is None
    log.write_text(lines(1))
    assert take(it, 1) == ["line 0"]


def test_follower_keeps_only_the_start_of_an_endless_line(tmp_path: Path) -> None:
    """A line longer than log.max_line_bytes costs a bounded amount of memory, and the lines
    after it are read with exact offsets."""
    log = tmp_path / "access.log"
    huge = b"\0" * (3 << 20)
    log.write_bytes(b"first\n" + huge)  # the long line is still being written
    follower = Follower(log, max_line_bytes=256, sleep=lambda s: None, idle_ticks=1)
    follower.resume(None)
    blocks = iter(follower)
    assert next(blocks).texts == ["first"]
    assert next(blocks) is None  # the long line's end is not there yet
    with log.open("ab") as f:
        f.write(b"\nafter\n")
    long_line = next(blocks)
    assert len(long_line.texts[0]) == 4 * 256 + 4
    assert long_line.ends == [6 + len(huge) + 1]
    after = next(blocks)
    assert after.texts == ["after"] and after.ends == [6 + len(huge) + 1 + 6]
    follower.close()
