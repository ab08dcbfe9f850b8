"""Preloads against fake llama-servers: a runner loads with no request, by the scheduler's rules,
and a failure shows on the bus and in the log instead of being raised at anyone."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import Event, PreloadFailed, RunnerStateChanged
from modelrunner.core.inference.pool import Limits, RunnerPool
from modelrunner.core.settings import Settings
from tests.event_log import recorded
from tests.inference.engine_fakes import FakeBundle, FakeStore, process_gone, wait_until

ONE = "sha256:" + "1" * 64
TWO = "sha256:" + "2" * 64

MakePool = Callable[..., RunnerPool]


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def events(bus: EventBus) -> AsyncIterator[list[Event]]:
    """Every event the bus publishes while the test runs."""
    async with recorded(bus.subscribe()) as seen:
        yield seen


@pytest.fixture
async def make_pool(
    engine_settings: Settings, fake_llama_server: Path, bundle: FakeBundle, bus: EventBus
) -> AsyncIterator[MakePool]:
    """Pools over two models (ai/one, ai/two) on the fake llama-server."""
    store = FakeStore()
    store.add(ONE, bundle, "ai/one")
    store.add(TWO, bundle, "ai/two")
    pools: list[RunnerPool] = []

    def make(
        *, max_runners: int = 4, queue_timeout: float = 30, llama_args: tuple[str, ...] = ()
    ) -> RunnerPool:
        settings = engine_settings.with_changes(
            llama_server_path=fake_llama_server, llama_args=llama_args or None
        )
        limits = Limits(max_runners, idle_timeout=300, queue_limit=8, queue_timeout=queue_timeout)
        pool = RunnerPool(settings, store, bus, stop_grace=2.0, limits=limits)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


def loaded(pool: RunnerPool) -> list[tuple[str, str, str]]:
    return [(info.reference, info.mode, info.state) for info in pool.running()]


async def test_a_preload_loads_the_runner_with_no_request(make_pool: MakePool) -> None:
    pool = make_pool()
    preload = pool.preload("ai/one")
    assert pool.preload(ONE) is preload  # one preload per runner at a time
    assert await preload
    assert loaded(pool) == [("ai/one:latest", "completion", "ready")]
    [info] = pool.running()
    assert info.in_use == 0
    assert await pool.preload("ai/one")  # loaded already: nothing to do


async def test_a_failed_preload_is_published_and_logged_not_raised(
    make_pool: MakePool, events: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(llama_args=("--fake-crash",))
    with caplog.at_level(logging.WARNING, logger="modelrunner.core.inference.preload"):
        assert not await pool.preload("ai/one")
    assert pool.running() == []
    await wait_until(lambda: any(isinstance(e, PreloadFailed) for e in events))
    [crashed] = [e for e in events if isinstance(e, RunnerStateChanged) and e.state == "crashed"]
    assert "fake crash" in crashed.detail  # the runner's state says why, as for any load
    [failed] = [e for e in events if isinstance(e, PreloadFailed)]
    assert (failed.model_id, failed.reference, failed.mode) == (ONE, "ai/one:latest", "completion")
    assert "fake crash" in failed.message
    [record] = caplog.records
    assert record.getMessage().startswith("preloading ai/one:latest (completion) failed: ")


async def test_a_preload_waits_its_turn_and_never_evicts_a_busy_runner(
    make_pool: MakePool,
) -> None:
    pool = make_pool(max_runners=1)
    holder = await pool.checkout("ai/one")
    preload = pool.preload("ai/two")
    await wait_until(lambda: pool.waiting_to_load == 1)
    assert loaded(pool) == [("ai/one:latest", "completion", "busy")]
    holder.release()  # one is idle now: the scheduler stops it for two, as for a request
    assert await preload
    assert loaded(pool) == [("ai/two:latest", "completion", "ready")]


async def test_a_preload_gives_up_waiting_for_room_at_the_queue_timeout(
    make_pool: MakePool, events: list[Event]
) -> None:
    pool = make_pool(max_runners=1, queue_timeout=0.3)  # shorter than DMR's minute: it wins
    holder = await pool.checkout("ai/one")
    assert not await pool.preload("ai/two")
    await wait_until(lambda: any(isinstance(e, PreloadFailed) for e in events))
    [failed] = [e for e in events if isinstance(e, PreloadFailed)]
    assert failed.message == (
        "cannot load ai/two:latest: waiting for ai/one:latest to finish "
        "(nothing freed up within 0.3 s)"
    )
    assert pool.waiting_to_load == 0
    assert loaded(pool) == [("ai/one:latest", "completion", "busy")]
    holder.release()


async def test_closing_the_pool_cancels_a_preload_and_stops_its_load(
    make_pool: MakePool,
) -> None:
    pool = make_pool(llama_args=("--fake-start-delay", "60"))
    preload = pool.preload("ai/one")
    await wait_until(lambda: any(info.pid for info in pool.running()))
    pid = pool.running()[0].pid
    assert pid is not None
    await pool.close()
    assert preload.cancelled()
    assert process_gone(pid)
    assert pool.running() == []
