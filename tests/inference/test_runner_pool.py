"""RunnerPool against fake llama-servers: load on demand, share loads, reuse, restart, unload."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from modelrunner.core.errors import CoreError, EngineUnavailable, ModelNotFound, RunnerFailed
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import EngineReady, Event, RunnerStateChanged
from modelrunner.core.inference.pool import RunnerKey, RunnerPool
from modelrunner.core.settings import Settings
from tests.event_log import recorded
from tests.inference.engine_fakes import FakeBundle, FakeStore, process_gone, wait_until

MODEL_A = "sha256:" + "a" * 64
MODEL_B = "sha256:" + "b" * 64


@pytest.fixture
def store(bundle: FakeBundle) -> FakeStore:
    fake_store = FakeStore()
    fake_store.add(MODEL_A, bundle, "ai/smollm2", "ai/smollm2:latest", "smollm2")
    fake_store.add(MODEL_B, bundle, "ai/gemma3")
    return fake_store


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def pool(
    engine_settings: Settings, fake_llama_server: Path, store: FakeStore, bus: EventBus
) -> AsyncIterator[RunnerPool]:
    settings = engine_settings.with_changes(llama_server_path=fake_llama_server)
    runner_pool = RunnerPool(settings, store, bus, stop_grace=2.0)
    yield runner_pool
    await runner_pool.close()


@pytest.fixture
async def events(bus: EventBus) -> AsyncIterator[list[Event]]:
    """Every event the bus publishes while the test runs."""
    async with recorded(bus.subscribe()) as seen:
        yield seen


async def test_first_acquire_loads_and_later_ones_reuse(pool: RunnerPool, store: FakeStore) -> None:
    runner = await pool.acquire("ai/smollm2")
    again = await pool.acquire("ai/smollm2")
    assert again is runner
    assert store.bundle_calls == 1
    [info] = pool.running()
    assert (info.model_id, info.reference, info.state) == (MODEL_A, "ai/smollm2:latest", "ready")
    assert info.mode == "completion"
    assert info.pid == runner.pid
    assert info.socket == str(runner.socket_path)


async def test_concurrent_acquires_and_other_spellings_share_one_load(
    pool: RunnerPool, store: FakeStore
) -> None:
    runners = await asyncio.gather(
        pool.acquire("ai/smollm2"), pool.acquire("smollm2"), pool.acquire("ai/smollm2:latest")
    )
    assert runners[0] is runners[1] is runners[2]
    assert store.bundle_calls == 1
    assert len(pool.running()) == 1


async def test_each_model_gets_its_own_runner(pool: RunnerPool) -> None:
    first, second = await asyncio.gather(pool.acquire("ai/smollm2"), pool.acquire("ai/gemma3"))
    assert first is not second
    assert first.socket_path != second.socket_path
    assert sorted(info.model_id for info in pool.running()) == [MODEL_A, MODEL_B]


async def test_an_unknown_model_is_not_found(pool: RunnerPool) -> None:
    with pytest.raises(ModelNotFound):
        await pool.acquire("ai/nothing")
    assert pool.running() == []


async def test_a_dead_runner_is_restarted_on_next_acquire(pool: RunnerPool) -> None:
    runner = await pool.acquire("ai/smollm2")
    old_pid = runner.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    await wait_until(lambda: pool.running()[0].state == "crashed")
    restarted = await pool.acquire("ai/smollm2")
    assert restarted.ready
    assert restarted.pid not in (None, old_pid)
    assert [info.state for info in pool.running()] == ["ready"]


async def test_unload_stops_the_named_runners_then_all(pool: RunnerPool) -> None:
    first = await pool.acquire("ai/smollm2")
    second = await pool.acquire("ai/gemma3")
    pids = [first.pid, second.pid]
    assert await pool.unload([MODEL_A, "sha256:unknown"]) == 1
    assert [info.model_id for info in pool.running()] == [MODEL_B]
    assert await pool.unload() == 1
    assert pool.running() == []
    assert all(pid is not None and process_gone(pid) for pid in pids)
    assert not first.runtime_dir.exists()


async def test_close_stops_everything_and_refuses_new_work(pool: RunnerPool) -> None:
    runner = await pool.acquire("ai/smollm2")
    pid = runner.pid
    assert pid is not None
    await pool.close()
    assert process_gone(pid)
    with pytest.raises(CoreError, match="shutting down"):
        await pool.acquire("ai/smollm2")


async def test_a_runner_that_fails_to_start_is_not_kept(
    engine_settings: Settings, fake_llama_server: Path, store: FakeStore, bus: EventBus
) -> None:
    settings = engine_settings.with_changes(
        llama_server_path=fake_llama_server, llama_args=("--fake-crash",)
    )
    pool = RunnerPool(settings, store, bus)
    try:
        with pytest.raises(RunnerFailed, match="fake crash"):
            await pool.acquire("ai/smollm2")
        assert pool.running() == []
        with pytest.raises(RunnerFailed):  # tried again, not a cached failure
            await pool.acquire("ai/smollm2")
        assert store.bundle_calls == 2
    finally:
        await pool.close()


async def test_no_engine_is_a_clear_error(
    engine_settings: Settings, store: FakeStore, bus: EventBus, clean_path: Callable[..., None]
) -> None:
    clean_path()
    pool = RunnerPool(engine_settings.with_changes(disable_server_update=True), store, bus)
    try:
        with pytest.raises(EngineUnavailable, match="DISABLE_SERVER_UPDATE"):
            await pool.acquire("ai/smollm2")
    finally:
        await pool.close()


async def test_state_changes_and_the_engine_are_announced(
    pool: RunnerPool, events: list[Event], fake_llama_server: Path
) -> None:
    await pool.acquire("ai/smollm2")
    await pool.unload()
    await wait_until(lambda: len(events) >= 6)
    assert events[0] == EngineReady(str(fake_llama_server), "env", "unknown")
    assert events[1:] == [
        RunnerStateChanged(MODEL_A, "ai/smollm2:latest", "starting"),
        # the fake prints llama-server's "listening on" line: a loading stage
        RunnerStateChanged(MODEL_A, "ai/smollm2:latest", "starting", "listening"),
        *(
            RunnerStateChanged(MODEL_A, "ai/smollm2:latest", state)
            for state in ("ready", "stopping", "stopped")
        ),
    ]


async def test_chat_goes_through_the_pools_upstream(pool: RunnerPool) -> None:
    runner = await pool.acquire("ai/smollm2")
    messages = [{"role": "user", "content": "hi"}]
    deltas = [delta async for delta in pool.upstream.chat_deltas(runner, {"messages": messages})]
    assert "".join(deltas) == "Hello from the fake server."
    assert len(deltas) == 5


async def test_a_caller_giving_up_does_not_abort_the_load_for_others(
    engine_settings: Settings, fake_llama_server: Path, store: FakeStore, bus: EventBus
) -> None:
    settings = engine_settings.with_changes(
        llama_server_path=fake_llama_server, llama_args=("--fake-start-delay", "0.5")
    )
    pool = RunnerPool(settings, store, bus)
    try:
        impatient = asyncio.create_task(pool.acquire("ai/smollm2"))
        patient = asyncio.create_task(pool.acquire("smollm2"))
        await wait_until(lambda: [info.state for info in pool.running()] == ["starting"])
        impatient.cancel()
        runner = await patient
        assert runner.ready
        assert impatient.cancelled()
    finally:
        await pool.close()


async def test_closing_during_a_load_stops_it_and_tells_the_waiters(
    engine_settings: Settings, fake_llama_server: Path, store: FakeStore, bus: EventBus
) -> None:
    settings = engine_settings.with_changes(
        llama_server_path=fake_llama_server, llama_args=("--fake-start-delay", "60")
    )
    pool = RunnerPool(settings, store, bus)
    waiting = asyncio.create_task(pool.acquire("ai/smollm2"))
    await wait_until(lambda: any(info.pid for info in pool.running()))
    pid = pool.running()[0].pid
    assert pid is not None
    await pool.close()
    with pytest.raises(CoreError, match="shutting down while it was loading"):
        await waiting
    assert process_gone(pid)
    assert pool.running() == []


async def test_each_mode_of_a_model_is_its_own_runner(pool: RunnerPool) -> None:
    chat = await pool.acquire("ai/smollm2")
    embed = await pool.acquire("smollm2", "embedding")
    assert embed is not chat
    assert await pool.acquire("ai/smollm2:latest", "embedding") is embed
    assert "--embeddings" in embed.argv
    assert "--embeddings" not in chat.argv
    logs = {
        pool.launcher.log_file(RunnerKey(MODEL_A, mode)).name
        for mode in ("completion", "embedding")
    }
    assert logs == {"llama-server-aaaaaaaaaaaa.log", "llama-server-aaaaaaaaaaaa-embedding.log"}
    infos = sorted((i.model_id, i.mode, i.reference) for i in pool.running())
    assert infos == [(MODEL_A, "completion", "ai/smollm2:latest"),
                     (MODEL_A, "embedding", "ai/smollm2:latest")]  # fmt: skip
    assert pool.get(MODEL_A, "embedding") is embed
    assert await pool.unload([MODEL_A], modes=["embedding"]) == 1
    assert [info.mode for info in pool.running()] == ["completion"]
    await pool.acquire("ai/smollm2", "embedding")
    assert await pool.unload([MODEL_A]) == 2  # a model's every mode


async def test_modes_count_against_the_runner_limit_on_their_own(
    engine_settings: Settings, fake_llama_server: Path, store: FakeStore, bus: EventBus
) -> None:
    settings = engine_settings.with_changes(llama_server_path=fake_llama_server, max_runners=2)
    pool = RunnerPool(settings, store, bus)
    try:
        await pool.acquire("ai/smollm2")
        await pool.acquire("ai/smollm2", "embedding")
        await pool.acquire("ai/gemma3")  # the least recently used runner goes: a's completion
        assert sorted((i.model_id, i.mode) for i in pool.running()) == [
            (MODEL_A, "embedding"), (MODEL_B, "completion")]  # fmt: skip
    finally:
        await pool.close()
