"""check_updates on a real registry: up to date, update available, unreachable, hf.co skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.distribution.registry import RegistryClient
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore
from modelrunner.core.store.updates import UP_TO_DATE, UPDATE_AVAILABLE, check_updates
from tests.distribution.conftest import RunningRegistry
from tests.distribution.seeding import digest_of, seed_model
from tests.gguf_factory import write_tiny_gguf
from tests.processes import free_port


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RegistryClient]:
    registry_client = RegistryClient(settings)
    yield registry_client
    await registry_client.close()


async def test_update_statuses(
    registry: RunningRegistry, client: RegistryClient, settings: Settings, tmp_path: Path
) -> None:
    store = ModelStore(settings.models_path)
    current = f"{registry.host}/updates/tiny:v1"
    stale = f"{registry.host}/updates/tiny:v2"
    gone = f"127.0.0.1:{free_port()}/nobody/home:v1"
    model = store.package_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"), current)
    for tag in (stale, gone, "hf.co/org/tiny:Q4_K_M"):
        store.tag(model.id, tag)
    await client.push_model(store, current)
    await client.push_model(store, stale)
    newer, _, _ = seed_model(registry, "updates/tiny", "v2")  # v2 moves on in the registry

    statuses = {status.tag: status for status in await check_updates(store, client)}

    assert set(statuses) == {current, stale, gone}  # Hugging Face models are not asked
    assert statuses[current].status == UP_TO_DATE
    assert statuses[current].remote_digest == model.id
    assert statuses[stale].status == UPDATE_AVAILABLE
    assert statuses[stale].update_available
    assert statuses[stale].remote_digest == digest_of(newer)
    assert statuses[gone].status.startswith("unreachable: cannot reach registry 127.0.0.1:")
    assert all(status.model_id == model.id for status in statuses.values())
