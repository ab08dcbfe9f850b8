"""The load queue against fake llama-servers, one runner at a time: requests waiting for room to
load their model go first come, first served, bounded by the queue timeout.

Arrival order is made certain by waiting until each request is in line before sending the next;
nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.errors import RunnerBusy
from modelrunner.core.event_bus import EventBus
from modelrunner.core.inference.pool import Limits, RunnerKey, RunnerPool
from modelrunner.core.settings import Settings
from tests.inference.engine_fakes import FakeBundle, FakeStore, wait_until

NAMES = ("one", "two", "three", "four")
MODELS = {name: "sha256:" + str(index) * 64 for index, name in enumerate(NAMES, 1)}


class HeldStore(FakeStore):
    """A FakeStore whose reads of a model's files can be held up until the test lets go."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, threading.Event] = {}

    def hold(self, model_id: str) -> threading.Event:
        self.gates[model_id] = threading.Event()
        return self.gates[model_id]

    def bundle(self, reference: str) -> FakeBundle:
        gate = self.gates.get(reference)
        if gate is not None:
            gate.wait(10)
        return super().bundle(reference)


@pytest.fixture
def store(bundle: FakeBundle) -> HeldStore:
    held = HeldStore()
    for name, model_id in MODELS.items():
        held.add(model_id, bundle, f"ai/{name}")
    return held


def make_pool(settings: Settings, store: FakeStore, queue_timeout: float = 30) -> RunnerPool:
    """A pool that runs one llama-server at a time."""
    limits = Limits(max_runners=1, idle_timeout=300, queue_limit=8, queue_timeout=queue_timeout)
    return RunnerPool(settings, store, EventBus(), stop_grace=2.0, limits=limits)


@pytest.fixture
async def pool(
    engine_settings: Settings, fake_llama_server: Path, store: HeldStore
) -> AsyncIterator[RunnerPool]:
    runner_pool = make_pool(
        engine_settings.with_changes(llama_server_path=fake_llama_server), store
    )
    yield runner_pool
    for gate in store.gates.values():
        gate.set()
    await runner_pool.close()


def loaded(pool: RunnerPool) -> list[tuple[str, str]]:
    return [(info.reference, info.state) for info in pool.running()]


class Loads:
    """Requests for other models that note when they are served, then hold their runner until
    the test lets them go."""

    def __init__(self, pool: RunnerPool) -> None:
        self.pool = pool
        self.served: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}

    async def send(self, *names: str) -> None:
        """Send one request per name, each once the one before is in the load queue."""
        for name in names:
            await self._in_line_behind(self.pool.waiting_to_load, name)

    async def _in_line_behind(self, waiting: int, name: str) -> None:
        self._done[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._request(name))
        await wait_until(lambda: self.pool.waiting_to_load == waiting + 1)

    async def _request(self, name: str) -> None:
        async with self.pool.lease(f"ai/{name}"):
            self.served.append(name)
            await self._done[name].wait()

    async def finish(self, name: str) -> None:
        """Let `name` give its runner back; wait until it has."""
        self._done[name].set()
        await self.tasks[name]


async def test_requests_waiting_for_room_load_in_arrival_order(pool: RunnerPool) -> None:
    holder = await pool.checkout("ai/one")
    loads = Loads(pool)
    await loads.send("two", "three", "four")
    assert loaded(pool) == [("ai/one:latest", "busy")]  # a busy runner is never evicted
    holder.release()
    await wait_until(lambda: loads.served == ["two"])
    assert pool.waiting_to_load == 2  # three and four wait for two, still in line
    await loads.finish("two")
    await wait_until(lambda: loads.served == ["two", "three"])
    await loads.finish("three")
    await wait_until(lambda: loads.served == ["two", "three", "four"])
    await loads.finish("four")
    assert pool.waiting_to_load == 0
    assert loaded(pool) == [("ai/four:latest", "idle")]


async def test_a_newcomer_queues_behind_waiters_even_when_room_looks_free(
    pool: RunnerPool, store: HeldStore
) -> None:
    holder = await pool.checkout("ai/one")
    loads = Loads(pool)
    await loads.send("two", "three")
    # When its turn comes, two reads its model's files again, and is held there.
    gate = store.hold(MODELS["two"])
    pool.launcher.forget(RunnerKey(MODELS["two"]))
    holder.release()
    assert loaded(pool) == [("ai/one:latest", "idle")]  # room to load one model
    await loads.send("four")  # it could start now, but two and three came first
    assert loaded(pool) == [("ai/one:latest", "idle")]
    gate.set()
    await wait_until(lambda: loads.served == ["two"])
    await loads.finish("two")
    await wait_until(lambda: loads.served == ["two", "three"])
    await loads.finish("three")
    await wait_until(lambda: loads.served == ["two", "three", "four"])
    await loads.finish("four")


async def test_a_request_that_gives_up_leaves_the_line(pool: RunnerPool) -> None:
    holder = await pool.checkout("ai/one")
    loads = Loads(pool)
    await loads.send("two", "three", "four")
    loads.tasks["three"].cancel()  # its client hung up
    await wait_until(lambda: pool.waiting_to_load == 2)
    holder.release()
    await wait_until(lambda: loads.served == ["two"])
    await loads.finish("two")
    await wait_until(lambda: loads.served == ["two", "four"])
    await loads.finish("four")
    assert loads.tasks["three"].cancelled()


async def test_waiting_for_room_ends_at_the_queue_timeout_with_a_clear_503(
    engine_settings: Settings, fake_llama_server: Path, store: HeldStore
) -> None:
    settings = engine_settings.with_changes(llama_server_path=fake_llama_server)
    pool = make_pool(settings, store, queue_timeout=0.5)
    try:
        holder = await pool.checkout("ai/one")
        first = asyncio.create_task(pool.checkout("ai/two"))
        await wait_until(lambda: pool.waiting_to_load == 1)
        with pytest.raises(RunnerBusy) as timed_out:
            await first
        assert timed_out.value.status == 503
        assert timed_out.value.message == (
            "cannot load ai/two:latest: waiting for ai/one:latest to finish "
            "(nothing freed up within 0.5 s)"
        )
        assert pool.waiting_to_load == 0
        assert loaded(pool) == [("ai/one:latest", "busy")]
        holder.release()
        lease = await pool.checkout("ai/two")  # the line is empty: it starts at once
        lease.release()
        assert loaded(pool) == [("ai/two:latest", "idle")]
    finally:
        await pool.close()
