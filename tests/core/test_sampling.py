"""ModelRunner.sample_system: readings on a cadence, yielded and published on the bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from modelrunner.core.events import Event, SystemSampled
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[ModelRunner]:
    model_runner = ModelRunner(settings)
    await model_runner.start()
    try:
        yield model_runner
    finally:
        await model_runner.stop()


async def _first_samples(events: AsyncIterator[Event], count: int) -> list[SystemSampled]:
    """The first `count` SystemSampled events (start-up events are skipped)."""
    samples: list[SystemSampled] = []
    async for event in events:
        if isinstance(event, SystemSampled):
            samples.append(event)
            if len(samples) == count:
                break
    return samples


async def test_two_samples_arrive_and_are_published(runner: ModelRunner) -> None:
    events = runner.subscribe()
    published = asyncio.create_task(_first_samples(events, 2))
    samples: list[SystemSampled] = []
    times: list[float] = []
    sampling = runner.sample_system(interval=0.2)
    assert isinstance(sampling, AsyncGenerator)  # so it can be closed here, not by the GC
    async for sample in sampling:
        samples.append(sample)
        times.append(time.monotonic())
        if len(samples) == 2:
            break
    await sampling.aclose()

    assert times[1] - times[0] >= 0.15
    for sample in samples:
        host = sample.host
        assert host.ram_total > 0
        assert 0 < host.ram_available <= host.ram_total
        assert 0.0 <= host.cpu_percent <= 100.0
        assert host.cpu_count >= 1
        assert host.processes == {}  # nothing loaded, nothing attributed
        gpus = sample.gpus
        if not gpus.gpus:  # no GPU here: a reason, never an exception
            assert isinstance(gpus.reason, str)
            assert gpus.reason
            assert gpus.memory_free is None
    assert await asyncio.wait_for(published, 5) == samples


async def test_nothing_is_read_until_someone_samples(runner: ModelRunner) -> None:
    events = runner.subscribe()
    waiting = asyncio.create_task(_first_samples(events, 1))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    waiting.cancel()
