"""EventBus: fans core events out to async subscribers; safe to publish from worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref

from modelrunner.core.events import EngineBuildProgressed, Event, PullProgressed, SystemSampled

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

    def subscribe(self) -> Subscription:
        """Every event published from this call on, for `async for`; call from the event loop."""
        return Subscription(self)

    def _add(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]) -> None:
        with self._lock:
            self._subscribers.append(entry)

    def _remove(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(entry)


class Subscription:
    """One subscriber's stream of events; registered when created, so nothing is missed.

    It ends its registration on `close()`, or when it is garbage-collected.
    """

    def __init__(self, bus: EventBus) -> None:
        queue: asyncio.Queue[Event] = asyncio.Queue(_QUEUE_LIMIT)
        entry = (asyncio.get_running_loop(), queue)
        self._queue = queue
        bus._add(entry)
        self._finalizer = weakref.finalize(self, bus._remove, entry)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if not self._finalizer.alive:
            raise StopAsyncIteration
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._finalizer()


def _offer(queue: asyncio.Queue[Event], event: Event) -> None:
    """Queue an event; a slow subscriber loses progress ticks (the next one supersedes them),
    never other events."""
    if queue.full():
        if isinstance(event, EngineBuildProgressed | PullProgressed | SystemSampled):
            return
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(event)
