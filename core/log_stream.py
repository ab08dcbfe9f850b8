"""GET /logs's stream: the service and engine logs merged by their bracket stamps, then followed.

As DMR's `pkg/logs`: lines are merge-sorted by the `[2006-01-02T15:04:05.000000000Z]` stamp they
start with, the service line first when two stamps are equal; a line without a stamp is passed on
as soon as it is read; a missing engine log is no error, a missing service log is (404). Following
goes on from the byte offsets the merge reached, so nothing written in between is lost, and
notices a rotated or truncated file (read to its end, then the new one from its start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path

from modelrunner.core.errors import CoreError
from modelrunner.core.log_files import ENGINE_LOG, SERVICE_LOG

POLL_SECONDS = 0.1
"""How often a follower looks for new lines."""
CHUNK_BYTES = 64 * 1024
"""Lines are sent in pieces of about this size."""

_STAMP = re.compile(rb"\[(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z\]")


class LogNotFound(CoreError):
    """The service log does not exist (yet)."""

    status = 404


class LogsUnavailable(CoreError):
    """No log directory is configured."""

    status = 501


def stamp_key(line: bytes) -> tuple[bytes, int] | None:
    """What a line sorts by: its stamp's date and time, and its nanoseconds; None without one."""
    match = _STAMP.match(line)
    if match is None:
        return None
    fraction = match.group(2) or b""
    return match.group(1), int(fraction.ljust(9, b"0"))


def merge_lines(service: Sequence[bytes], engine: Sequence[bytes]) -> Iterator[bytes]:
    """Both logs' lines in stamp order (service first on a tie); empty lines are dropped.

    A line without a stamp comes out as soon as its reader reaches it, as DMR's merge does.
    """
    service_reader, engine_reader = _Reader(service), _Reader(engine)
    yield from service_reader.advance()
    yield from engine_reader.advance()
    while service_reader.pending is not None and engine_reader.pending is not None:
        if engine_reader.key < service_reader.key:
            yield from engine_reader.take()
        else:
            yield from service_reader.take()
    for reader in (service_reader, engine_reader):
        while reader.pending is not None:
            yield from reader.take()


class _Reader:
    """One log's lines, with the next stamped line held back until it is its turn."""

    def __init__(self, lines: Sequence[bytes]) -> None:
        self._lines = iter(lines)
        self.pending: bytes | None = None
        self.key: tuple[bytes, int] = (b"", 0)

    def take(self) -> Iterator[bytes]:
        """The pending line, then those without a stamp up to the next stamped one."""
        if self.pending is not None:
            yield self.pending
        yield from self.advance()

    def advance(self) -> Iterator[bytes]:
        """Pass on lines without a stamp until the next stamped one, which becomes pending."""
        self.pending = None
        for line in self._lines:
            if not line:
                continue
            key = stamp_key(line)
            if key is None:
                yield line
                continue
            self.pending, self.key = line, key
            return


class _Tail:
    """A log file read from where the last read ended; complete lines only while following."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None
        self._partial = b""

    def open(self) -> bool:
        """Open the file if it exists now; whether it is open."""
        if self._descriptor is None:
            with contextlib.suppress(FileNotFoundError):
                self._descriptor = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self._descriptor is not None

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def read(self, *, final: bool = False) -> list[bytes]:
        """The lines written since the last read (without newlines).

        A last line without its newline is kept for the next read, unless `final`. A file that
        was rotated away is read to its end first, then the new file from its start.
        """
        if not self.open():
            return []
        lines = self._read_lines()
        if self._rotated():  # read to its end: now the new file at the path, from its start
            lines += self._read_lines()  # what came between the read and the rename
            self.close()
            self._partial = b""
            return lines + self.read(final=final)
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return lines

    def _read_lines(self) -> list[bytes]:
        assert self._descriptor is not None
        pieces = [self._partial]
        while chunk := os.read(self._descriptor, 1 << 20):
            pieces.append(chunk)
        data = b"".join(pieces)
        complete, newline, self._partial = data.rpartition(b"\n")
        if not newline:
            return []
        return [line.removesuffix(b"\r") for line in complete.split(b"\n")]

    def _rotated(self) -> bool:
        """Whether another file is at the path now; a truncated file is read again from 0."""
        assert self._descriptor is not None
        mine = os.fstat(self._descriptor)
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            return False  # rotated, the next one not written yet: the old one may still grow
        if (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            return True
        if os.lseek(self._descriptor, 0, os.SEEK_CUR) > mine.st_size:
            os.lseek(self._descriptor, 0, os.SEEK_SET)
        return False


def stream_logs(
    directory: Path | None,
    *,
    follow: bool,
    engines: bool,
    poll: float = POLL_SECONDS,
    until: asyncio.Event | None = None,
) -> AsyncGenerator[bytes, None]:
    """The merged logs as text; with `follow`, new lines until the iterator is closed or
    `until` is set.

    Raises:
        LogsUnavailable: No log directory is configured.
        LogNotFound: The service log does not exist (checked now, before anything is sent).
    """
    if directory is None:
        raise LogsUnavailable("logs API not available: log directory not configured")
    if not (directory / SERVICE_LOG).is_file():
        raise LogNotFound("service log not found")
    tails = [_Tail(directory / SERVICE_LOG), _Tail(directory / ENGINE_LOG) if engines else None]
    return _stream(tails, follow=follow, poll=poll, until=until or asyncio.Event())


async def _stream(
    tails: list[_Tail | None], *, follow: bool, poll: float, until: asyncio.Event
) -> AsyncGenerator[bytes, None]:
    service, engine = tails
    assert service is not None
    try:
        try:
            if not service.open():
                raise FileNotFoundError(f"{service.path} is gone")
            lines = await asyncio.to_thread(_read_both, service, engine, not follow)
        except OSError as error:
            yield f"\n[logs error: {error}]\n".encode()
            return
        for chunk in _chunks(lines):
            yield chunk
        while follow:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), poll)
            try:
                lines = _read_both(service, engine, until.is_set())
            except OSError as error:
                yield f"\n[logs error: {error}]\n".encode()
                return
            for chunk in _chunks(lines):
                yield chunk
            if until.is_set():
                return
    finally:
        for tail in tails:
            if tail is not None:
                tail.close()


def _read_both(service: _Tail, engine: _Tail | None, final: bool) -> list[bytes]:
    service_lines = service.read(final=final)
    engine_lines = engine.read(final=final) if engine is not None else []
    return list(merge_lines(service_lines, engine_lines))


def _chunks(lines: list[bytes]) -> Iterator[bytes]:
    """Lines joined with newlines, in pieces of about CHUNK_BYTES."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line) + 1
        if size >= CHUNK_BYTES:
            yield b"\n".join(batch) + b"\n"
            batch, size = [], 0
    if batch:
        yield b"\n".join(batch) + b"\n"
