"""The event bus: subscribers get every event from the moment they subscribe, in order."""

from __future__ import annotations

import asyncio
import gc
import threading

from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import EngineBuildProgressed, ModelsChanged


async def test_events_published_before_the_first_read_are_kept() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    bus.publish(ModelsChanged())  # nobody is reading yet
    assert await asyncio.wait_for(anext(subscription), 1) == ModelsChanged()


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    events = [EngineBuildProgressed(float(i), f"line {i}") for i in range(5)]
    for event in events:
        bus.publish(event)
    assert [await anext(first) for _ in events] == events
    assert [await anext(second) for _ in events] == events


async def test_publishing_from_another_thread_reaches_the_loop() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    thread = threading.Thread(target=bus.publish, args=(ModelsChanged(),))
    thread.start()
    thread.join()
    assert await asyncio.wait_for(anext(subscription), 1) == ModelsChanged()


async def test_closed_or_forgotten_subscriptions_stop_receiving() -> None:
    bus = EventBus()
    closed = bus.subscribe()
    closed.close()
    forgotten = bus.subscribe()
    del forgotten
    gc.collect()
    bus.publish(ModelsChanged())
    assert bus._subscribers == []
    async for _event in closed:
        raise AssertionError("a closed subscription yields nothing")


async def test_a_slow_subscriber_drops_progress_ticks_not_other_events() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    for i in range(1000):
        bus.publish(EngineBuildProgressed(i / 10, "tick"))
    bus.publish(EngineBuildProgressed(100.0, "last tick"))  # dropped: the queue is full
    bus.publish(ModelsChanged())  # kept: the oldest tick makes room
    received = [await anext(subscription) for _ in range(1000)]
    assert received[-1] == ModelsChanged()
    assert EngineBuildProgressed(100.0, "last tick") not in received
