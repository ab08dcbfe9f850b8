"""RunnerPool against fake llama-servers when something changes while the pool awaits: a runner
taken while the idle check stops another, a request deciding while the pool closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.errors import RunnerGone
from modelrunner.core.event_bus import EventBus
from modelrunner.core.inference.pool import Limits, RunnerPool
from modelrunner.core.inference.runners import Prepared, RunnerEntry, RunnerKey
from modelrunner.core.settings import Settings
from tests.inference.engine_fakes import FakeBundle, FakeStore, process_gone, wait_until

ONE = "sha256:" + "1" * 64
TWO = "sha256:" + "2" * 64


@pytest.fixture
async def pool(
    engine_settings: Settings, fake_llama_server: Path, bundle: FakeBundle
) -> AsyncIterator[RunnerPool]:
    """A pool over two models (ai/one, ai/two) on the fake llama-server."""
    store = FakeStore()
    store.add(ONE, bundle, "ai/one")
    store.add(TWO, bundle, "ai/two")
    settings = engine_settings.with_changes(llama_server_path=fake_llama_server)
    limits = Limits(max_runners=4, idle_timeout=300, queue_limit=8, queue_timeout=30)
    runner_pool = RunnerPool(settings, store, EventBus(), stop_grace=2.0, limits=limits)
    yield runner_pool
    await runner_pool.close()


async def test_a_runner_taken_while_the_idle_check_stops_another_is_not_stopped(
    pool: RunnerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both runners expire together; while the first one stops, a request takes the second:
    the idle check must decide about the second afresh, not from its list of a moment ago."""
    gate, first_stopped = asyncio.Event(), asyncio.Event()
    stop = pool._stop

    async def slow_stop(entry: RunnerEntry) -> None:
        if entry.model_id == ONE:
            await gate.wait()
            await stop(entry)
            first_stopped.set()
        else:
            await stop(entry)

    monkeypatch.setattr(pool, "_stop", slow_stop)
    async with pool.lease("ai/one", keep_alive=0), pool.lease("ai/two", keep_alive=0):
        pass  # both released in one step: both expire at once
    await wait_until(lambda: [info.model_id for info in pool.running()] == [TWO])
    async with pool.lease("ai/two") as runner:
        gate.set()
        await first_stopped.wait()
        await asyncio.sleep(0.05)
        assert [(info.model_id, info.state) for info in pool.running()] == [(TWO, "busy")]
        assert runner.pid is not None
        assert not process_gone(runner.pid)


async def test_a_request_deciding_while_the_pool_closes_starts_no_runner(
    pool: RunnerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, reading = asyncio.Event(), asyncio.Event()
    prepare = pool.launcher.prepare

    async def slow_prepare(key: RunnerKey) -> Prepared:
        reading.set()
        await gate.wait()
        return await prepare(key)

    monkeypatch.setattr(pool.launcher, "prepare", slow_prepare)
    request = asyncio.create_task(pool.acquire("ai/one"))
    await reading.wait()
    await pool.close()
    gate.set()
    with pytest.raises(RunnerGone, match="shutting down") as caught:
        await request
    assert caught.value.status == 503  # a retry later may work: not a 500
    assert pool.running() == []
    with pytest.raises(RunnerGone):
        await pool.acquire("ai/two")
