"""What a pull says on the bus: started ("queued", then "resolving") before any network I/O, its
layers, then exactly one end, also when it fails before any layer or waits for a slot."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from modelrunner.core.distribution.pull import Puller, RegistryLike
from modelrunner.core.distribution.pull_queue import PullQueue
from modelrunner.core.distribution.registry import Manifest, RegistryClient
from modelrunner.core.errors import CoreError, InvalidReference, ModelNotFound
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import (
    CANCELLED_STATUS,
    Event,
    PullFailed,
    PullFinished,
    PullProgressed,
    PullStarted,
)
from modelrunner.core.references import ModelReference
from modelrunner.core.settings import Settings
from modelrunner.core.store import media_types
from modelrunner.core.store.store import ModelStore
from tests.distribution.conftest import RunningRegistry
from tests.distribution.gated_registry import GatedRegistry
from tests.distribution.pull_fixtures import describe, manifest_for, push_model

PullEvents = list[PullStarted | PullProgressed | PullFinished | PullFailed]


class RecordingBus(EventBus):
    """An EventBus that also keeps every event as it is published, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Event] = []

    def publish(self, event: Event) -> None:
        self.published.append(event)
        super().publish(event)

    def of(self, reference: str) -> PullEvents:
        """The pull events published so far for one normalised reference."""
        return [
            event
            for event in self.published
            if isinstance(event, PullStarted | PullProgressed | PullFinished | PullFailed)
            and event.reference == reference
        ]


class WatchedClient(RegistryClient):
    """The real client, noting which events had been published when it first went to the network."""

    def __init__(self, settings: Settings, bus: RecordingBus) -> None:
        super().__init__(settings)
        self.bus = bus
        self.published_before_io: list[Event] | None = None

    async def get_manifest(self, ref: ModelReference) -> Manifest:
        if self.published_before_io is None:
            self.published_before_io = list(self.bus.published)
        return await super().get_manifest(ref)


MakePuller = Callable[[Callable[[], RegistryLike]], Puller]


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
async def make_puller(settings: Settings, bus: RecordingBus) -> AsyncIterator[MakePuller]:
    """Pullers on the recording bus; `max_active=1`, so a second pull waits for the first."""
    made: list[Puller] = []

    def make(registry: Callable[[], RegistryLike]) -> Puller:
        store = ModelStore(settings.models_path)
        made.append(Puller(settings, store, bus, registry, max_active=1))
        return made[-1]

    yield make
    for puller in made:
        await puller.close()


async def _push_small_model(registry: RunningRegistry, repo: str, tmp_path: Path) -> None:
    blob = tmp_path / "w.gguf"
    blob.write_bytes(os.urandom(2 << 20))
    config = b'{"config":{"format":"gguf","size":"2MiB"}}'
    manifest = manifest_for(config, media_types.CONFIG_V01, [describe(blob, media_types.GGUF)])
    await push_model(registry.url, repo, "latest", manifest, config, [blob])


async def test_start_then_layers_then_finished(
    registry: RunningRegistry,
    settings: Settings,
    bus: RecordingBus,
    make_puller: MakePuller,
    tmp_path: Path,
) -> None:
    await _push_small_model(registry, "ai/events", tmp_path)
    client = WatchedClient(settings, bus)
    puller = make_puller(lambda: client)
    reference = f"{registry.host}/ai/events:latest"
    model = await puller.pull(reference)
    events = bus.of(reference)
    assert events[:2] == [PullStarted(reference, "queued"), PullStarted(reference, "resolving")]
    assert client.published_before_io == events[:2]  # both out before the first request
    assert events[2:-1]
    assert all(isinstance(event, PullProgressed) for event in events[2:-1])
    assert events[-1] == PullFinished(reference, model.id, cached=False, size="2MiB")

    bus.published.clear()
    await puller.pull(reference)  # stored already: only tagged, and said the same way
    assert bus.of(reference) == [
        PullStarted(reference, "queued"),
        PullStarted(reference, "resolving"),
        PullFinished(reference, model.id, cached=True, size="2MiB"),
    ]


@pytest.mark.parametrize(
    ("fixture", "status"), [("registry", 404), ("basic_registry", 401)], ids=["unknown", "auth"]
)
async def test_a_failure_before_any_layer_ends_the_pull(
    fixture: str,
    status: int,
    request: pytest.FixtureRequest,
    settings: Settings,
    bus: RecordingBus,
    make_puller: MakePuller,
) -> None:
    """An unknown model (404) and a registry that wants credentials we lack (401)."""
    registry: RunningRegistry = request.getfixturevalue(fixture)
    reference = f"{registry.host}/ai/nothing-here:latest"
    puller = make_puller(lambda: RegistryClient(settings))
    with pytest.raises(CoreError) as caught:
        await puller.pull(reference)
    assert caught.value.status == status
    assert bus.of(reference) == [
        PullStarted(reference, "queued"),
        PullStarted(reference, "resolving"),
        PullFailed(reference, caught.value.message, status),
    ]
    assert puller.active() == []
    assert puller.queue.pending() == []


async def test_a_bad_name_starts_nothing(bus: RecordingBus, make_puller: MakePuller) -> None:
    """The caller has the error to show; no pull was started, so none is announced."""
    puller = make_puller(GatedRegistry)
    with pytest.raises(InvalidReference):
        await puller.pull("ai/Bad Name")
    assert bus.published == []


async def test_a_pull_waits_queued_until_a_slot_frees(
    bus: RecordingBus, make_puller: MakePuller
) -> None:
    registry = GatedRegistry()
    puller = make_puller(lambda: registry)
    first = asyncio.ensure_future(puller.pull("ai/first"))
    second = asyncio.ensure_future(puller.pull("ai/second"))
    await asyncio.wait_for(registry.arrived.wait(), 5)
    await asyncio.sleep(0.05)  # time enough for the second to go wrong, were it to
    assert [(pull.reference, pull.state) for pull in puller.active()] == [
        ("ai/first:latest", "resolving"),
        ("ai/second:latest", "queued"),
    ]
    assert bus.of("ai/second:latest") == [PullStarted("ai/second:latest", "queued")]
    assert registry.asked == ["ai/first:latest"]

    registry.gate.set()
    for pull in (first, second):
        with pytest.raises(ModelNotFound):
            await pull
    assert registry.asked == ["ai/first:latest", "ai/second:latest"]
    assert bus.of("ai/second:latest") == [
        PullStarted("ai/second:latest", "queued"),
        PullStarted("ai/second:latest", "resolving"),
        PullFailed("ai/second:latest", "model ai/second:latest not found", 404),
    ]


async def test_a_queued_pull_cancelled_ends_cancelled(
    bus: RecordingBus, make_puller: MakePuller
) -> None:
    registry = GatedRegistry()
    puller = make_puller(lambda: registry)
    first = asyncio.ensure_future(puller.pull("ai/first"))
    second = asyncio.ensure_future(puller.pull("ai/second"))
    await asyncio.wait_for(registry.arrived.wait(), 5)
    assert await puller.cancel("ai/second")
    with pytest.raises(asyncio.CancelledError):
        await second
    assert bus.of("ai/second:latest") == [
        PullStarted("ai/second:latest", "queued"),
        PullFailed("ai/second:latest", "the pull was cancelled", CANCELLED_STATUS),
    ]
    registry.gate.set()
    with pytest.raises(ModelNotFound):
        await first
    assert registry.asked == ["ai/first:latest"]


async def test_resumed_pulls_are_announced_and_end_even_if_cancelled_at_once(
    settings: Settings, bus: RecordingBus, make_puller: MakePuller
) -> None:
    """After a restart: each pending pull says "queued" first; one cancelled before its task ever
    ran still ends (the row would otherwise stay "queued" for good)."""
    PullQueue(settings.state_dir).add("ai/a:latest")
    PullQueue(settings.state_dir).add("ai/b:latest")
    registry = GatedRegistry()
    puller = make_puller(lambda: registry)
    await puller.resume_pending()
    assert bus.published == [
        PullStarted("ai/a:latest", "queued"),
        PullStarted("ai/b:latest", "queued"),
    ]
    assert await puller.cancel("ai/b")  # nothing awaited since: its task has not run yet
    assert bus.of("ai/b:latest") == [
        PullStarted("ai/b:latest", "queued"),
        PullFailed("ai/b:latest", "the pull was cancelled", CANCELLED_STATUS),
    ]
    await asyncio.wait_for(registry.arrived.wait(), 5)
    assert registry.asked == ["ai/a:latest"]
    assert bus.of("ai/a:latest")[-1] == PullStarted("ai/a:latest", "resolving")
