"""Fetch one blob into the store: streamed to disk, resumable, in parallel ranges, verified.

The partial is `blobs/sha256/<hex>.incomplete`. A blob fetched as one stream resumes from the
partial's length (as DMR does, so DMR's partials are resumed too); a big blob on a registry that
accepts ranges is cut into pieces that a few connections fetch in order, its progress recorded
in a sidecar (`ranges.py`). A resume is trusted only on a 206 whose Content-Range starts where we
asked. Bytes are hashed in order by a worker thread as the contiguous prefix grows, which taking
pieces lowest first keeps close behind the download; size and sha256 are checked before the
rename to `blobs/sha256/<hex>`. A wrong blob deletes the partial.

The blob is not fsynced before the rename (neither DMR, Ollama nor curl do): waiting for the disk
would double a pull's time on a disk slower than the network. Nothing unverified is renamed, and
after a power loss `fsck` finds a blob the disk did not keep and `fsck --repair` fetches it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from modelrunner.core.distribution.ranges import SIDECAR_SUFFIX, RangePlan
from modelrunner.core.distribution.registry import (
    DigestMismatch,
    RangeNotSatisfiable,
    RegistryError,
    RegistryUnavailable,
)
from modelrunner.core.errors import CoreError
from modelrunner.core.references import ModelReference
from modelrunner.core.store.layout import INCOMPLETE_SUFFIX, fsync_directory, parse_digest

_RETRY_ANSWER_RE = re.compile(r"answered HTTP (5\d\d|408|429)\b")
_HASH_STEP = 8 << 20
"""Hash in the background once this many new contiguous bytes are on disk."""
_READ_SIZE = 4 << 20
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class BlobStream(Protocol):
    """An open blob response (RegistryClient.open_blob)."""

    status: int
    start: int
    """Offset of the first byte (checked against Content-Range by the client)."""
    length: int | None
    total: int | None
    """The whole blob's size as the registry says, when it does."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class BlobSource(Protocol):
    """What the transfer needs from a registry client."""

    async def blob_size(self, ref: ModelReference, digest: str) -> tuple[int, bool]: ...

    async def open_blob(
        self, ref: ModelReference, digest: str, *, start: int = 0, end: int | None = None
    ) -> BlobStream: ...


class BlobSizeMismatch(DigestMismatch):
    """The registry's blob is not the size its manifest declares: no retry can fix it."""


class TransferInterrupted(CoreError):
    """A transfer broke off (stall, short read, dropped connection); worth retrying."""

    status = 502


@dataclass(frozen=True)
class TransferOptions:
    """How blobs are fetched; the defaults suit a fast local network and Docker Hub alike."""

    stall_timeout: float = 30.0
    """Seconds without a byte after which a transfer counts as stalled and is retried."""
    retries: int = 5
    """Retries of one blob after a transient failure, with exponential back-off."""
    backoff: float = 1.0
    """First back-off in seconds; doubled on each retry."""
    backoff_max: float = 30.0
    connections: int = 4
    """Connections fetching pieces of one big blob at once."""
    piece_size: int = 16 << 20
    """Bytes per piece of a big blob (more for a blob of over 1024 pieces). Small pieces keep
    the hash, which reads in order, right behind the download (bench/pull.py measures it)."""
    parallel_threshold: int = 64 << 20
    """Blobs at least this big are fetched in ranges when the registry accepts ranges."""
    report_step: int = 1 << 20
    """Bytes written between two progress reports (events, background hashing)."""


ProgressCallback = Callable[[int, str], None]
"""Called with (bytes of the blob on disk, state) as a transfer moves on."""


def is_transient(error: BaseException) -> bool:
    """Whether a failure is worth a retry: network trouble, stalls, 5xx, 408/429."""
    if isinstance(error, TransferInterrupted | RegistryUnavailable):
        return True
    if isinstance(error, RegistryError):
        return _RETRY_ANSWER_RE.search(error.message) is not None
    if isinstance(error, CoreError):
        return error.status in _RETRY_STATUSES and not isinstance(error, DigestMismatch)
    return isinstance(error, aiohttp.ClientError | TimeoutError | ConnectionError)


def partial_paths(target: Path) -> tuple[Path, Path]:
    """The `.incomplete` partial of a blob path and its range sidecar."""
    partial = target.with_name(target.name + INCOMPLETE_SUFFIX)
    return partial, partial.with_name(partial.name + SIDECAR_SUFFIX)


class _Hasher:
    """sha256 of a partial's contiguous prefix, advanced on a worker thread."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.hashed = 0
        self._hash = hashlib.new(algorithm)
        self._running: asyncio.Future[None] | None = None

    def kick(self, descriptor: int, frontier: int) -> None:
        """Hash up to frontier in the background if enough new bytes are there."""
        if (self._running is None or self._running.done()) and frontier - self.hashed >= _HASH_STEP:
            self._running = asyncio.ensure_future(
                asyncio.to_thread(self._advance, descriptor, frontier)
            )

    async def finish(self, descriptor: int, size: int) -> str:
        """Hash the rest; the hex digest of bytes [0, size)."""
        await self.settle()
        await asyncio.to_thread(self._advance, descriptor, size)
        return self._hash.hexdigest()

    async def settle(self) -> None:
        """Wait for a background step (before the descriptor closes)."""
        if self._running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)

    def _advance(self, descriptor: int, upto: int) -> None:
        while self.hashed < upto:
            data = os.pread(descriptor, min(_READ_SIZE, upto - self.hashed), self.hashed)
            if not data:
                raise TransferInterrupted("the partial blob is shorter than recorded")
            self._hash.update(data)
            self.hashed += len(data)


class BlobTransfer:
    """One blob from a registry into `target`, resuming whatever partial is on disk."""

    def __init__(
        self,
        source: BlobSource,
        ref: ModelReference,
        digest: str,
        size: int,
        target: Path,
        *,
        options: TransferOptions,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.source, self.ref, self.digest, self.size = source, ref, digest, size
        self.target = target
        self.partial, self.sidecar = partial_paths(target)
        self.options = options
        self.on_progress = on_progress
        self._algorithm, self._hex = parse_digest(digest)
        self.fetched = 0
        """Bytes received from the registry by this transfer (all attempts)."""
        self._ranges = True
        """False once the registry answered a range wrongly: one stream from then on."""

    async def run(self) -> None:
        """Fetch, verify and rename; retries transient failures with back-off.

        Raises:
            DigestMismatch: The registry served other content (the partial is deleted).
            TransferInterrupted, RegistryUnavailable, ...: Retries ran out (the message says
                how many attempts were made and how much of the blob is kept for a resume).
        """
        if self.target.exists():
            with contextlib.suppress(FileNotFoundError):
                self.sidecar.unlink()
            return
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fresh_retry_left = True
        failures = attempts = 0
        while True:
            resumed = self.partial.exists()
            before = self._on_disk()
            attempts += 1
            try:
                await self._attempt()
                return
            except DigestMismatch as error:
                self._discard()
                if isinstance(error, BlobSizeMismatch) or not (resumed and fresh_retry_left):
                    raise
                fresh_retry_left = False  # the old partial may have been damaged: once afresh
            except Exception as error:
                failures = 1 if self._on_disk() > before else failures + 1
                if not is_transient(error):
                    raise
                if failures > self.options.retries:
                    raise self._gave_up(error, attempts) from error
                delay = min(self.options.backoff * 2 ** (failures - 1), self.options.backoff_max)
                self._report(self._on_disk(), "retrying")
                await asyncio.sleep(delay)

    def _gave_up(self, error: Exception, attempts: int) -> CoreError:
        """The last transient error, saying that it was retried and what a new pull resumes."""
        text = error.message if isinstance(error, CoreError) else str(error) or repr(error)
        text += f"; gave up after {attempts} attempts"
        if kept := self._on_disk():
            text += (
                f". The {kept / (1 << 20):.2f} MiB downloaded so far is kept: pull again to resume"
            )
        if not isinstance(error, CoreError):
            return TransferInterrupted(text)
        final = copy.copy(error)  # the same kind of error (and status), told in full
        final.message, final.args = text, (text,)
        return final

    def _report(self, current: int, state: str) -> None:
        if self.on_progress is not None:
            self.on_progress(current, state)

    def _discard(self) -> None:
        for path in (self.partial, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _on_disk(self) -> int:
        plan = RangePlan.load(self.sidecar, self.size)
        if plan is not None:
            plan.close()
            return plan.on_disk
        with contextlib.suppress(OSError):
            return min(self.partial.stat().st_size, self.size)
        return 0

    async def _plan(self, descriptor: int) -> RangePlan:
        """Resume the recorded ranges, or the partial's prefix, or start; maybe split in ranges."""
        plan = RangePlan.load(self.sidecar, self.size)
        if plan is not None and os.fstat(descriptor).st_size == self.size:
            return plan
        if plan is not None:
            plan.discard()
            os.ftruncate(descriptor, 0)
        on_disk = os.fstat(descriptor).st_size
        if on_disk > self.size:
            os.ftruncate(descriptor, 0)
            on_disk = 0
        remaining = self.size - on_disk
        parallel = self._ranges and self.options.connections > 1
        if parallel and remaining >= self.options.parallel_threshold:
            size, accepts_ranges = await self.source.blob_size(self.ref, self.digest)
            if size != self.size:
                raise self._size_mismatch(size)
            if accepts_ranges:
                plan = RangePlan.split(self.sidecar, self.size, on_disk, self.options.piece_size)
                os.ftruncate(descriptor, self.size)
                return plan
        return RangePlan.single(self.size, on_disk)

    async def _attempt(self) -> None:
        descriptor = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        hasher = _Hasher(self._algorithm)
        plan: RangePlan | None = None
        try:
            plan = await self._plan(descriptor)
            self._report(plan.on_disk, "downloading")
            pending = [index for index, segment in enumerate(plan.segments) if not segment.finished]
            queue = iter(pending)  # shared: each connection takes the lowest piece left

            async def connection() -> None:
                for index in queue:
                    await self._fetch_segment(descriptor, plan, index, hasher)

            count = min(self.options.connections, len(pending))
            tasks = [asyncio.ensure_future(connection()) for _ in range(count)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            self._report(plan.on_disk, "verifying")
            actual = await hasher.finish(descriptor, self.size)
            if os.fstat(descriptor).st_size != self.size or actual != self._hex:
                raise DigestMismatch(
                    f"the registry sent wrong content for blob {self.digest} of "
                    f"{self.ref.normalized} (it hashes to {self._algorithm}:{actual}); "
                    "nothing was stored"
                )
        finally:
            await hasher.settle()
            os.close(descriptor)
            if plan is not None:
                plan.close()
        os.chmod(self.partial, 0o644)
        os.replace(self.partial, self.target)
        fsync_directory(self.target.parent)
        with contextlib.suppress(FileNotFoundError):
            self.sidecar.unlink()
        self._report(self.size, "done")

    async def _open(self, plan: RangePlan, index: int) -> tuple[BlobStream, int]:
        """Open a segment's remaining bytes; returns the stream and where its bytes start."""
        segment = plan.segments[index]
        ranged = segment.done > 0 or segment.end < self.size
        end = segment.end - 1 if segment.end < self.size else None
        try:
            stream = await self.source.open_blob(self.ref, self.digest, start=segment.done, end=end)
        except RangeNotSatisfiable as error:  # the partial is longer than the registry's blob
            raise DigestMismatch(f"{error.message}; the partial is discarded") from error
        if stream.status in (200, 206) and stream.total not in (None, self.size):
            await stream.aclose()
            raise self._size_mismatch(stream.total)
        if stream.status == 206 and _content_range_matches(stream, segment.done, segment.end):
            return stream, segment.done
        if stream.status == 200 and not ranged:
            return stream, 0
        if stream.status == 200 and len(plan.segments) == 1:
            plan.record(index, 0)  # the registry ignored the range: start over
            return stream, 0
        await stream.aclose()
        if stream.status in (200, 206):
            # A range answered wrongly: forget the plan, fetch as one stream next time.
            self._ranges = False
            plan.discard()
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()
            raise TransferInterrupted(
                f"the registry answered a byte range of {self.digest} incorrectly"
            )
        raise TransferInterrupted(f"the registry answered {stream.status} for blob {self.digest}")

    def _size_mismatch(self, actual: int | None) -> BlobSizeMismatch:
        return BlobSizeMismatch(
            f"blob {self.digest} of {self.ref.normalized} is {actual} bytes at the registry, "
            f"but its manifest says {self.size}; nothing was stored"
        )

    async def _fetch_segment(
        self, descriptor: int, plan: RangePlan, index: int, hasher: _Hasher
    ) -> None:
        """Write a segment's bytes as they arrive (no copy), each write recorded in the plan.

        Events and hashing follow every `report_step` bytes.
        """
        stream, position = await self._open(plan, index)
        end = plan.segments[index].end
        reported = position
        stall = self.options.stall_timeout
        loop = asyncio.get_running_loop()

        def report() -> None:
            nonlocal reported
            if position != reported:
                reported = position
                self._report(plan.on_disk, "downloading")
                hasher.kick(descriptor, plan.frontier)

        try:
            try:
                async with asyncio.timeout(stall) as deadline:
                    async for chunk in stream:
                        deadline.reschedule(loop.time() + stall)
                        self.fetched += len(chunk)
                        if position + len(chunk) > end:
                            raise DigestMismatch(
                                f"the registry sent more than the {self.size} bytes of blob "
                                f"{self.digest}"
                            )
                        view = memoryview(chunk)
                        while view:
                            written = os.pwrite(descriptor, view, position)
                            position += written
                            view = view[written:]
                        plan.record(index, position)  # a kill -9 loses at most one chunk
                        if position - reported >= self.options.report_step:
                            report()
            except TimeoutError:
                report()
                self._report(plan.on_disk, "stalled")
                raise TransferInterrupted(
                    f"no data for {stall:g} s while fetching blob {self.digest}"
                ) from None
        finally:
            with contextlib.suppress(Exception):
                report()
            await stream.aclose()
        if position != end:
            raise TransferInterrupted(
                f"the registry broke off blob {self.digest} at byte {position} of {self.size}"
            )


def _content_range_matches(stream: BlobStream, start: int, end: int) -> bool:
    """Whether a 206 covers exactly [start, end) of the blob.

    The client already checked that Content-Range starts at `start`; the length must match too.
    """
    return stream.start == start and (stream.length is None or stream.length == end - start)
