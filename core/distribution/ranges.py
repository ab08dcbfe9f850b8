"""Range progress of a partial blob: which bytes of `<hex>.incomplete` are already on disk.

A blob fetched as one stream needs no record: like DMR, the partial's size is its progress.
A blob fetched in parallel byte ranges is cut into pieces (segments) that a few connections take
in order, lowest first, so the bytes on disk stay nearly contiguous and the hash, which must read
them in order, keeps up with the download instead of hashing most of the blob at the end. The
partial is then a sparse file with several growing runs, so a small sidecar
`<hex>.incomplete.ranges` records them: a header, then one fixed-size record `(start, end, done)`
per segment. `done` is rewritten in place (one 8-byte `pwrite`) after each
write of data, so the record never claims bytes that are not in the partial, and a kill -9
loses at most the one write in flight.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from modelrunner.core.store.layout import atomic_write

SIDECAR_SUFFIX = ".ranges"
_MAGIC = b"MRRANGE1"
_HEADER = struct.Struct("<8sQI")
_RECORD = struct.Struct("<QQQ")
_DONE = struct.Struct("<Q")
MAX_SEGMENTS = 1024
"""Pieces of one blob at most: bigger blobs get bigger pieces (the sidecar stays under 25 KiB)."""


@dataclass
class Segment:
    """Bytes [start, end) of a blob, of which [start, done) are on disk."""

    start: int
    end: int
    done: int

    @property
    def finished(self) -> bool:
        return self.done >= self.end


class RangePlan:
    """The segments of one partial blob; persisted in a sidecar when there is more than one run."""

    def __init__(self, size: int, segments: list[Segment], sidecar: Path | None) -> None:
        self.size = size
        self.segments = segments
        self.sidecar = sidecar
        self._on_disk = sum(segment.done - segment.start for segment in segments)
        self._first_open = 0
        """No segment before this index is unfinished (a cursor for `frontier`)."""
        self._descriptor: int | None = None
        if sidecar is not None:
            self._descriptor = os.open(sidecar, os.O_RDWR | os.O_CLOEXEC)

    @classmethod
    def single(cls, size: int, on_disk: int) -> RangePlan:
        """One stream from the start; the partial's own length is the record."""
        return cls(size, [Segment(0, size, on_disk)], None)

    @classmethod
    def split(cls, sidecar: Path, size: int, on_disk: int, piece: int) -> RangePlan:
        """Cut the bytes after a contiguous prefix into pieces of about `piece` bytes; persist.

        At most MAX_SEGMENTS pieces. The first starts at 0 with the prefix done, so a partial
        left by a single stream (ours or DMR's) keeps its bytes.
        """
        remaining = size - on_disk
        count = max(1, min(MAX_SEGMENTS, -(-remaining // max(1, piece))))
        bounds = [on_disk + remaining * i // count for i in range(count + 1)]
        segments = [Segment(bounds[i], bounds[i + 1], bounds[i]) for i in range(count)]
        segments[0] = Segment(0, bounds[1], on_disk)
        segments = [segment for segment in segments if segment.end > segment.start]
        header = _HEADER.pack(_MAGIC, size, len(segments))
        body = b"".join(_RECORD.pack(s.start, s.end, s.done) for s in segments)
        atomic_write(sidecar, header + body)
        return cls(size, segments, sidecar)

    @classmethod
    def load(cls, sidecar: Path, size: int) -> RangePlan | None:
        """The persisted plan, or None if the sidecar is missing, damaged or for another size."""
        try:
            data = sidecar.read_bytes()
            magic, recorded_size, count = _HEADER.unpack_from(data)
            records = [
                _RECORD.unpack_from(data, _HEADER.size + i * _RECORD.size) for i in range(count)
            ]
        except (OSError, struct.error):
            return None
        if magic != _MAGIC or recorded_size != size or not records:
            return None
        segments = [Segment(*record) for record in records]
        position = 0
        for segment in segments:
            if segment.start != position or not segment.start <= segment.done <= segment.end:
                return None
            position = segment.end
        if position != size:
            return None
        return cls(size, segments, sidecar)

    @property
    def on_disk(self) -> int:
        """Bytes of the blob already in the partial."""
        return self._on_disk

    @property
    def frontier(self) -> int:
        """End of the contiguous run of bytes from offset 0 (what can be hashed so far)."""
        segments = self.segments
        while self._first_open < len(segments) and segments[self._first_open].finished:
            self._first_open += 1
        if self._first_open == len(segments):
            return self.size
        return segments[self._first_open].done

    @property
    def finished(self) -> bool:
        return all(segment.finished for segment in self.segments)

    def record(self, index: int, done: int) -> None:
        """Note that segment `index` now has [start, done) on disk (after that data's write)."""
        segment = self.segments[index]
        self._on_disk += done - segment.done
        if done < segment.done:
            self._first_open = min(self._first_open, index)
        segment.done = done
        if self._descriptor is not None:
            offset = _HEADER.size + index * _RECORD.size + 16
            os.pwrite(self._descriptor, _DONE.pack(done), offset)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def discard(self) -> None:
        """Close and delete the sidecar."""
        self.close()
        if self.sidecar is not None:
            with contextlib.suppress(FileNotFoundError):
                self.sidecar.unlink()
