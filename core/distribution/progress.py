"""Pull progress: per-layer speed and ETA meters, and DMR's NDJSON progress stream.

The pull engine publishes `PullProgressed` / `PullFinished` / `PullFailed` events; this module turns
them into the lines DMR's `POST /models/create` streams (§3.5 of the distribution reference):

    {"type":"progress","message":"Downloaded: 1.00 MB","total":2017,
     "layer":{"id":"sha256:…","size":2016,"current":1048576},"mode":"pull"}
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from modelrunner.core.errors import CoreError
from modelrunner.core.events import PullFailed, PullFinished, PullProgressed
from modelrunner.core.store import go_json

PullProgressEvent = PullProgressed | PullFinished | PullFailed
"""What a pull reports to its `on_progress` callback (and publishes on the event bus)."""

EMIT_INTERVAL = 0.1
"""DMR reports a layer at most every 100 ms …"""
EMIT_BYTES = 1 << 20
"""… or after every MiB, and at completion."""
SPEED_WINDOW = 1.0
"""Seconds of samples the instantaneous speed is computed over."""

PULLED_MESSAGE = "Model pulled successfully"

_GO_HTML_ESCAPES = str.maketrans(
    {"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;"}
)
"""Go's html.EscapeString, which DMR applies to every text/plain progress chunk."""


class LayerMeter:
    """Bytes, instantaneous and average speed, and ETA of one layer download."""

    def __init__(
        self, size: int, current: int = 0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.current = current
        self._clock = clock
        self._started = clock()
        self._start_bytes = current
        self._samples: deque[tuple[float, int]] = deque([(self._started, current)])
        self._emitted_at = float("-inf")
        self._emitted_bytes = -1

    def restart(self, current: int) -> None:
        """Begin a new transfer attempt from `current` bytes (a resume after a retry)."""
        self.current = current
        self._samples.clear()
        self._samples.append((self._clock(), current))

    def update(self, current: int) -> None:
        """Record that `current` bytes are on disk now."""
        now = self._clock()
        self.current = current
        self._samples.append((now, current))
        while len(self._samples) > 2 and now - self._samples[1][0] >= SPEED_WINDOW:
            self._samples.popleft()

    @property
    def speed(self) -> float:
        """Bytes per second over the last second or so."""
        if len(self._samples) < 2:
            return 0.0
        (first_time, first_bytes), (last_time, last_bytes) = self._samples[0], self._samples[-1]
        elapsed = max(self._clock(), last_time) - first_time
        return (last_bytes - first_bytes) / elapsed if elapsed > 0 else 0.0

    @property
    def average_speed(self) -> float:
        """Bytes per second since the meter started (resumed bytes excluded)."""
        elapsed = self._clock() - self._started
        return (self.current - self._start_bytes) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed, None while the speed is unknown."""
        remaining = self.size - self.current
        if remaining <= 0:
            return 0.0
        speed = self.speed or self.average_speed
        return remaining / speed if speed > 0 else None

    def due(self) -> bool:
        """Whether a progress report is due (100 ms or 1 MiB since the last one, or completion)."""
        if self.current == self._emitted_bytes:
            return False
        return (
            self.current >= self.size
            or self._clock() - self._emitted_at >= EMIT_INTERVAL
            or self.current - self._emitted_bytes >= EMIT_BYTES
        )

    def mark_emitted(self) -> None:
        self._emitted_at = self._clock()
        self._emitted_bytes = self.current


def _message(kind: str, message: str, total: int, layer: dict[str, Any]) -> dict[str, Any]:
    """One DMR progress message with its Go field order."""
    return {"type": kind, "message": message, "total": total, "layer": layer, "mode": "pull"}


def dmr_progress_message(event: PullProgressEvent) -> dict[str, Any] | None:
    """The DMR message for one event, or None when DMR would say nothing."""
    if isinstance(event, PullProgressed):
        if event.state in ("queued", "failed"):
            return None
        layer = {"id": event.layer, "size": event.size, "current": event.current}
        text = f"Downloaded: {event.pulled / (1 << 20):.2f} MB"
        return _message("progress", text, event.total, layer)
    empty_layer = {"size": 0, "current": 0}
    if isinstance(event, PullFinished):
        text = f"Using cached model: {event.size}" if event.cached else PULLED_MESSAGE
        return _message("success", text, 0, empty_layer)
    return _message("error", f"Error: {event.message}", 0, empty_layer)


def dmr_progress_line(event: PullProgressEvent, *, html_escape: bool = False) -> bytes | None:
    """One NDJSON line (Go encoder bytes); HTML-escaped like DMR's text/plain stream if asked."""
    message = dmr_progress_message(event)
    if message is None:
        return None
    return encode_line(message, html_escape=html_escape)


def encode_line(message: dict[str, Any], *, html_escape: bool = False) -> bytes:
    """A progress message as DMR sends it: Go encoder bytes, HTML-escaped for text/plain."""
    line = go_json.encoder_encode(message)
    if html_escape:
        return line.decode().translate(_GO_HTML_ESCAPES).encode()
    return line


async def dmr_progress_lines(
    run: Callable[[Callable[[PullProgressEvent], None]], Awaitable[object]],
    *,
    html_escape: bool = False,
) -> AsyncIterator[bytes]:
    """Run a pull and yield DMR's progress stream for it, ending with a success or error line.

    `run` starts the pull with the callback it is given, e.g.
    `lambda report: puller.pull("ai/x", on_progress=report)`. Leaving the iteration early
    (a client disconnect) cancels the caller's interest in the pull.
    """
    queue: asyncio.Queue[PullProgressEvent | None] = asyncio.Queue()
    task = asyncio.ensure_future(run(queue.put_nowait))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    ended = False
    try:
        while (event := await queue.get()) is not None:
            ended = ended or isinstance(event, PullFinished | PullFailed)
            if (line := dmr_progress_line(event, html_escape=html_escape)) is not None:
                yield line
        error = None if task.cancelled() else task.exception()
        if error is not None and not ended:
            text = error.message if isinstance(error, CoreError) else str(error)
            failed = PullFailed("", text, getattr(error, "status", 500))
            yield dmr_progress_line(failed, html_escape=html_escape) or b""
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
