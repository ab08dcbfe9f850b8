"""Recording the core events a test causes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from modelrunner.core.events import Event


@contextlib.asynccontextmanager
async def recorded(stream: AsyncIterator[Event]) -> AsyncIterator[list[Event]]:
    """Every event `stream` yields while the block runs, in order.

    Pass a fresh `subscribe()`: a subscription registers when it is made, so nothing published
    after that call is missed.
    """
    seen: list[Event] = []

    async def collect() -> None:
        async for event in stream:
            seen.append(event)

    task = asyncio.create_task(collect())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
