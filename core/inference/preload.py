"""Preloads: a runner loaded in the background, as DMR does after `POST /engines/_configure`.

DMR answers `_configure` 202, then loads the model with a synthetic chat request (so its
completion runner) in preload-only mode, giving up after a minute (reference §1.8, §6.3): the
first real request finds the model loaded. Here a preload is a request to the pool like any
other (`RunnerPool.acquire`, not counted in flight): the scheduler's rules hold (idle runners
may be stopped for it, busy ones never; with no room it waits its turn in the load queue), it
waits for room at most a minute (or the queue timeout, if shorter), and a load it started runs
to the end, as every load in the pool does (DMR kills a preload still loading after a minute).

Nobody awaits a preload, so a failure goes to the log and the bus (`PreloadFailed`); a
llama-server that dies while loading is also reported crashed, as for any load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from modelrunner.core.errors import CoreError
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import PreloadFailed
from modelrunner.core.inference.runners import RunnerKey

log = logging.getLogger(__name__)

PRELOAD_WAIT = 60.0
"""Seconds a preload waits for room to load (DMR's configure-preload timeout)."""

Acquire = Callable[[str, str, float], Awaitable[object]]
"""Load (or find loaded) the runner of a model ID in a mode, waiting at most so many seconds for
room: `RunnerPool.acquire`."""


class Preloads:
    """Background loads, at most one per runner at a time; `close()` cancels them."""

    def __init__(self, acquire: Acquire, bus: EventBus, *, wait: float = PRELOAD_WAIT) -> None:
        self._acquire = acquire
        self._bus = bus
        self.wait = wait
        """Seconds a preload waits for room before it gives up."""
        self._tasks: dict[RunnerKey, asyncio.Task[bool]] = {}

    def start(self, key: RunnerKey, name: str) -> asyncio.Task[bool]:
        """Load runner `key` (of the model called `name`) in the background, or follow the
        preload of it under way; the task ends True once it is ready, False if it cannot be."""
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._preload(key, name), name=f"preload {name}")
            self._tasks[key] = task
            task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[bool]) -> None:
        for key in [k for k, t in self._tasks.items() if t is task]:
            del self._tasks[key]

    async def _preload(self, key: RunnerKey, name: str) -> bool:
        try:
            await self._acquire(key.model_id, key.mode, self.wait)
        except Exception as error:  # nobody else will hear of it: say it here
            message = error.message if isinstance(error, CoreError) else repr(error)
            log.warning("preloading %s (%s) failed: %s", name, key.mode, message)
            self._bus.publish(PreloadFailed(key.model_id, name, message, key.mode))
            return False
        log.info("preloaded %s (%s)", name, key.mode)
        return True

    async def close(self) -> None:
        """Cancel every preload under way; a load one started stops with the pool."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
