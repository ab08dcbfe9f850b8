"""A model's export tarball as async chunks: written by a thread, a bounded number ahead."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

from modelrunner.core.store.store import ModelExport


class _ChunkSink(io.RawIOBase):
    """A write-only file handing each write to an asyncio queue (blocking while it is full)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
        self._loop = loop
        self._queue = queue
        self.abandoned = False
        """Set when the reader has gone: the next write fails and the writer stops."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if self.abandoned:
            raise BrokenPipeError("the export's reader has gone")
        if chunk:
            asyncio.run_coroutine_threadsafe(self._queue.put(chunk), self._loop).result()
        return len(chunk)


async def stream_export(export: ModelExport) -> AsyncIterator[bytes]:
    """Run `export.write_to` in a thread and yield its writes; stopping early ends the thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
    raw = _ChunkSink(loop, queue)
    sink = io.BufferedWriter(raw, buffer_size=1 << 20)

    def produce() -> None:
        try:
            export.write_to(sink)
            sink.flush()
        finally:
            export.close()
            if not raw.abandoned:
                asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    producer = loop.run_in_executor(None, produce)
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        await producer
    finally:
        # No await here: a cancelled reader (a client that left) may not wait any more.
        raw.abandoned = True
        while not queue.empty():  # a writer waiting for room gets it, then fails and stops
            queue.get_nowait()
        producer.add_done_callback(_expected_failure)


def _expected_failure(producer: asyncio.Future[None]) -> None:
    """Take the export writer's error once its reader has gone (BrokenPipeError, as a rule)."""
    if not producer.cancelled():
        producer.exception()
