"""EventBus: fans core events out to async subscribers; safe to publish from worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from modelrunner.core.events import EngineBuildProgressed, Event

_QUEUE_LIMIT = 1000


class EventBus:
    """Delivers every published event to every current subscriber, in order."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = []
        self._lock = threading.Lock()

    def publish(self, event: Event) -> None:
        """Hand the event to each subscriber; callable from any thread."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                _offer(queue, event)
            else:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_offer, queue, event)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yield events published from now on, until the caller stops iterating."""
        queue: asyncio.Queue[Event] = asyncio.Queue(_QUEUE_LIMIT)
        entry = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._subscribers.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                self._subscribers.remove(entry)


def _offer(queue: asyncio.Queue[Event], event: Event) -> None:
    """Queue an event; a slow subscriber loses build-progress ticks, never other events."""
    if queue.full():
        if isinstance(event, EngineBuildProgressed):
            return
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(event)
