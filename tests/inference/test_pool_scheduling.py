"""RunnerPool scheduling with real llama-servers on tiny GGUFs: limits, eviction, keep-alive."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from modelrunner.core.errors import RunnerBusy, RunnerFailed
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import Event, RunnerEvicted, RunnerStateChanged
from modelrunner.core.inference.pool import Limits, RunnerPool
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore
from tests.gguf_factory import write_tiny_gguf
from tests.inference.engine_fakes import process_gone, wait_until

pytestmark = pytest.mark.llama

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}
MODELS = ("ai/tiny-a:latest", "ai/tiny-b:latest", "ai/tiny-c:latest")

MakePool = Callable[..., RunnerPool]


@pytest.fixture
def store(settings: Settings, tmp_path: Path) -> ModelStore:
    """Three different tiny models (different weights, so different IDs)."""
    model_store = ModelStore(settings.models_path)
    for seed, reference in enumerate(MODELS):
        gguf = write_tiny_gguf(tmp_path / f"tiny-{seed}.gguf", seed=seed, ctx=2048)
        model_store.package_gguf(gguf, reference, context_size=256)
    return model_store


@pytest.fixture
async def make_pool(
    settings: Settings, store: ModelStore, llama_server: Path
) -> AsyncIterator[MakePool]:
    pools: list[RunnerPool] = []

    def make(
        *,
        bus: EventBus | None = None,
        max_runners: int = 4,
        idle_timeout: float = 300.0,
        queue_limit: int = 8,
        queue_timeout: float = 30.0,
        memory_budget: int | None = None,
        llama_args: tuple[str, ...] | None = None,
    ) -> RunnerPool:
        limits = Limits(max_runners, idle_timeout, queue_limit, queue_timeout)
        pool = RunnerPool(
            settings.with_changes(llama_args=llama_args),
            store,
            bus or EventBus(),
            limits=limits,
            memory_budget=memory_budget,
            stop_grace=2.0,
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def collect(bus: EventBus) -> tuple[list[Event], asyncio.Task[None]]:
    seen: list[Event] = []
    stream = bus.subscribe()
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)

    async def run() -> None:
        seen.append(await first)
        async for event in stream:
            seen.append(event)

    return seen, asyncio.create_task(run())


async def use(pool: RunnerPool, reference: str, keep_alive: float | None = None) -> int:
    """One chat through a lease; returns the runner's pid."""
    async with pool.lease(reference, keep_alive=keep_alive) as runner:
        deltas = [delta async for delta in pool.upstream.chat_deltas(runner, HELLO)]
        assert all(isinstance(delta, str) for delta in deltas)
        assert runner.pid is not None
        return runner.pid


def loaded(pool: RunnerPool) -> list[str]:
    return sorted(info.reference for info in pool.running())


async def test_two_models_within_the_limit_run_at_once(make_pool: MakePool) -> None:
    pool = make_pool(max_runners=2)
    async with pool.lease("ai/tiny-a:latest") as first, pool.lease("ai/tiny-b:latest") as second:
        assert first is not second
        assert first.ready
        assert second.ready
        states = {info.reference: (info.state, info.in_use) for info in pool.running()}
        assert states == {"ai/tiny-a:latest": ("busy", 1), "ai/tiny-b:latest": ("busy", 1)}
    assert {info.state for info in pool.running()} == {"idle"}
    assert all(info.memory_bytes > 0 for info in pool.running())


async def test_a_third_model_evicts_the_lru_idle_one_as_the_preview_said(
    make_pool: MakePool,
) -> None:
    bus = EventBus()
    events, task = await collect(bus)
    pool = make_pool(bus=bus, max_runners=2)
    pid_a = await use(pool, "ai/tiny-a:latest")
    await use(pool, "ai/tiny-b:latest")
    shown = await pool.preview("ai/tiny-c:latest")
    assert shown.action == "start"
    assert shown.evict == ("ai/tiny-a:latest",)
    assert shown.message.startswith("loading ai/tiny-c:latest would stop ai/tiny-a:latest; needs ")
    await use(pool, "ai/tiny-c:latest")
    assert loaded(pool) == ["ai/tiny-b:latest", "ai/tiny-c:latest"]
    assert process_gone(pid_a)
    [evicted] = [e for e in events if isinstance(e, RunnerEvicted)]
    assert (evicted.reference, evicted.reason, evicted.for_model) == (
        "ai/tiny-a:latest",
        "memory",
        "ai/tiny-c:latest",
    )
    task.cancel()


async def test_a_memory_budget_evicts_the_lru_idle_one(make_pool: MakePool) -> None:
    probe = make_pool()
    need = (await probe.preview("ai/tiny-a:latest")).needed_bytes
    await probe.close()
    pool = make_pool(memory_budget=int(need * 2.5))
    await use(pool, "ai/tiny-b:latest")
    await use(pool, "ai/tiny-a:latest")
    shown = await pool.preview("ai/tiny-c:latest")
    assert shown.evict == ("ai/tiny-b:latest",)
    await use(pool, "ai/tiny-c:latest")
    assert loaded(pool) == ["ai/tiny-a:latest", "ai/tiny-c:latest"]


async def test_a_model_bigger_than_the_budget_is_refused_with_the_numbers(
    make_pool: MakePool,
) -> None:
    pool = make_pool(memory_budget=1000)
    shown = await pool.preview("ai/tiny-a:latest")
    assert (shown.action, shown.fits) == ("refuse", False)
    with pytest.raises(Exception, match="not enough memory to load ai/tiny-a:latest") as refused:
        await use(pool, "ai/tiny-a:latest")
    assert getattr(refused.value, "status", None) == 503
    assert pool.running() == []


async def test_a_busy_runner_is_never_evicted(make_pool: MakePool) -> None:
    pool = make_pool(max_runners=2, queue_timeout=1.0)
    async with pool.lease("ai/tiny-a:latest") as busy:
        await use(pool, "ai/tiny-b:latest")  # newer than a, but idle
        await use(pool, "ai/tiny-c:latest")
        assert busy.ready
        assert loaded(pool) == ["ai/tiny-a:latest", "ai/tiny-c:latest"]
    one = make_pool(max_runners=1, queue_timeout=1.0)
    async with one.lease("ai/tiny-a:latest"):
        with pytest.raises(
            RunnerBusy, match="cannot load ai/tiny-b:latest: waiting for ai/tiny-a:latest"
        ):
            await use(one, "ai/tiny-b:latest")
        waiting = asyncio.create_task(use(one, "ai/tiny-b:latest"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    await waiting  # the lease ended: a is idle now and makes room
    assert loaded(one) == ["ai/tiny-b:latest"]


async def test_requests_queue_for_a_busy_runner_then_get_a_clear_503(
    make_pool: MakePool,
) -> None:
    pool = make_pool(queue_limit=1, llama_args=("-ngl", "0", "--parallel", "1"))
    async with pool.lease("ai/tiny-a:latest"):
        [info] = pool.running()
        assert info.slots == 1
        queued = asyncio.create_task(use(pool, "ai/tiny-a:latest"))
        await wait_until(lambda: pool.running()[0].waiting == 1)
        with pytest.raises(RunnerBusy, match="ai/tiny-a:latest is busy: 1 requests waiting"):
            await use(pool, "ai/tiny-a:latest")
        assert not queued.done()
    await queued


async def test_keep_alive_zero_unloads_after_the_request_and_minus_one_never(
    make_pool: MakePool,
) -> None:
    pool = make_pool(idle_timeout=0.5)
    pid = await use(pool, "ai/tiny-a:latest", keep_alive=0)
    await wait_until(lambda: pool.running() == [])
    assert process_gone(pid)
    forever = await use(pool, "ai/tiny-b:latest", keep_alive=-1)
    default = await use(pool, "ai/tiny-c:latest")  # the 0.5 s idle timeout
    await wait_until(lambda: loaded(pool) == ["ai/tiny-b:latest"])
    assert process_gone(default)
    await asyncio.sleep(1.0)
    assert loaded(pool) == ["ai/tiny-b:latest"]
    assert not process_gone(forever)
    [info] = pool.running()
    assert info.keep_alive == -1


async def test_a_killed_llama_server_is_reported_crashed_and_reloaded(
    make_pool: MakePool,
) -> None:
    bus = EventBus()
    events, task = await collect(bus)
    pool = make_pool(bus=bus)
    pid = await use(pool, "ai/tiny-a:latest")
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: pool.running()[0].state == "crashed")
    [crash] = [e for e in events if isinstance(e, RunnerStateChanged) and e.state == "crashed"]
    assert crash.detail.startswith("llama-server exited with status -9")
    assert pool.running()[0].detail == crash.detail
    again = await use(pool, "ai/tiny-a:latest")
    assert again != pid
    assert [info.state for info in pool.running()] == ["idle"]
    task.cancel()


async def kill_mid_stream(pool: RunnerPool) -> None:
    """Stream a long answer through a lease and SIGKILL llama-server after sending it."""
    long = {**HELLO, "max_tokens": 200, "ignore_eos": True, "stream": True}
    async with pool.lease("ai/tiny-a:latest") as runner:
        headers = {"Content-Type": "application/json"}
        response = await pool.upstream.request(
            runner, "POST", "/v1/chat/completions", json.dumps(long).encode(), headers
        )
        try:
            assert runner.pid is not None
            os.kill(runner.pid, signal.SIGKILL)
            async for _chunk in response.iter_chunks():
                await asyncio.sleep(0.01)
            raise AssertionError("the stream ended before the kill took effect")
        finally:
            await response.aclose()


async def test_a_request_in_flight_when_llama_server_dies_gets_a_clear_error(
    make_pool: MakePool,
) -> None:
    pool = make_pool()
    with pytest.raises(RunnerFailed, match="crashed while serving this request"):
        await kill_mid_stream(pool)
    await use(pool, "ai/tiny-a:latest")
