"""The busy queue against a fake llama-server with one slot: first come, first served, bounded.

Arrival order is made certain by waiting until each request is queued before sending the next;
nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.errors import RunnerBusy
from modelrunner.core.event_bus import EventBus
from modelrunner.core.inference.pool import Limits, RunnerPool
from modelrunner.core.inference.runners import RunnerInfo
from modelrunner.core.settings import Settings
from tests.inference.engine_fakes import FakeBundle, FakeStore, wait_until

MODEL = "sha256:" + "a" * 64


@pytest.fixture
async def pool(
    engine_settings: Settings, fake_llama_server: Path, bundle: FakeBundle
) -> AsyncIterator[RunnerPool]:
    """A pool whose runners serve one request at a time; three may wait for it."""
    store = FakeStore()
    store.add(MODEL, bundle, "ai/one")
    settings = engine_settings.with_changes(
        llama_server_path=fake_llama_server, llama_args=("--parallel", "1")
    )
    limits = Limits(max_runners=4, idle_timeout=300, queue_limit=3, queue_timeout=30)
    runner_pool = RunnerPool(settings, store, EventBus(), stop_grace=2.0, limits=limits)
    yield runner_pool
    await runner_pool.close()


def runner(pool: RunnerPool) -> RunnerInfo:
    [info] = pool.running()
    return info


class Requests:
    """Requests that note when they get the slot, then hold it until the test lets them go."""

    def __init__(self, pool: RunnerPool) -> None:
        self.pool = pool
        self.served: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}

    async def send(self, *names: str) -> None:
        """Send one request per name, each once the one before is waiting in the queue."""
        for name in names:
            await self._queued_behind(runner(self.pool).waiting, name)

    async def _queued_behind(self, waiting: int, name: str) -> None:
        self._done[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._request(name))
        await wait_until(lambda: runner(self.pool).waiting == waiting + 1)

    async def _request(self, name: str) -> None:
        async with self.pool.lease("ai/one"):
            self.served.append(name)
            await self._done[name].wait()

    async def finish(self, name: str) -> None:
        """Let `name` give its slot back; wait until it has."""
        self._done[name].set()
        await self.tasks[name]


async def test_waiters_are_served_in_arrival_order_and_newcomers_queue_behind(
    pool: RunnerPool,
) -> None:
    holder = await pool.checkout("ai/one")
    assert runner(pool).slots == 1
    requests = Requests(pool)
    await requests.send("first", "second", "third")
    holder.release()
    # The slot went straight to the first in line: there is no moment it is free to grab.
    assert (runner(pool).in_use, runner(pool).waiting) == (1, 2)
    await wait_until(lambda: requests.served == ["first"])
    await requests.send("newcomer")  # behind second and third, though it came as a slot was used
    for name in ("first", "second", "third", "newcomer"):
        await requests.finish(name)
    assert requests.served == ["first", "second", "third", "newcomer"]
    assert (runner(pool).in_use, runner(pool).waiting, runner(pool).state) == (0, 0, "idle")


async def test_a_waiter_that_gives_up_leaves_the_line_and_takes_no_slot(pool: RunnerPool) -> None:
    holder = await pool.checkout("ai/one")
    requests = Requests(pool)
    await requests.send("first", "impatient", "third")
    requests.tasks["impatient"].cancel()  # its client hung up
    await wait_until(lambda: runner(pool).waiting == 2)
    holder.release()
    await requests.finish("first")
    await requests.finish("third")
    assert requests.served == ["first", "third"]
    assert runner(pool).in_use == 0


async def test_the_queue_is_bounded_and_waits_only_so_long(
    engine_settings: Settings, fake_llama_server: Path, bundle: FakeBundle
) -> None:
    store = FakeStore()
    store.add(MODEL, bundle, "ai/one")
    settings = engine_settings.with_changes(
        llama_server_path=fake_llama_server, llama_args=("--parallel", "1")
    )
    limits = Limits(max_runners=4, idle_timeout=300, queue_limit=1, queue_timeout=0.5)
    pool = RunnerPool(settings, store, EventBus(), stop_grace=2.0, limits=limits)
    try:
        holder = await pool.checkout("ai/one")
        waiter = asyncio.create_task(pool.checkout("ai/one"))
        await wait_until(lambda: runner(pool).waiting == 1)
        with pytest.raises(RunnerBusy, match="ai/one:latest is busy: 1 requests waiting") as full:
            await pool.checkout("ai/one")
        assert full.value.status == 503
        with pytest.raises(RunnerBusy, match=r"nothing freed up within 0.5 s"):
            await waiter
        assert runner(pool).waiting == 0
        holder.release()
        assert runner(pool).in_use == 0  # the waiter that left was handed nothing
    finally:
        await pool.close()


async def test_waiters_of_a_runner_that_dies_start_a_new_one(pool: RunnerPool) -> None:
    holder = await pool.checkout("ai/one")
    requests = Requests(pool)
    await requests.send("first", "second")
    pid = runner(pool).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: requests.served == ["first"])  # on a new llama-server
    assert runner(pool).pid not in (None, pid)
    holder.release()  # a lease on the dead runner gives nothing to the new one's queue
    await requests.finish("first")
    await requests.finish("second")
    assert requests.served == ["first", "second"]
