"""Resuming pulls: kill -9 at random points, stalls, parallel ranges, partials left by DMR."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.distribution.progress import PullProgressEvent
from modelrunner.core.distribution.pull import Puller
from modelrunner.core.distribution.registry import RegistryClient
from modelrunner.core.distribution.transfer import TransferOptions
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import PullProgressed
from modelrunner.core.settings import Settings
from modelrunner.core.store import media_types
from modelrunner.core.store.store import ModelStore
from tests.distribution.conftest import RunningRegistry
from tests.distribution.pull_fixtures import (
    FaultProxy,
    ProxiedRequest,
    describe,
    manifest_for,
    push_model,
)

_CHILD = Path(__file__).with_name("pull_child.py")
_BLOCK = 4096
KILLS = 20


@pytest.fixture
async def proxy(registry: RunningRegistry) -> AsyncIterator[FaultProxy]:
    relay = FaultProxy(registry.host)
    await relay.start()
    yield relay
    await relay.close()


async def _push_random(
    registry: RunningRegistry, repo: str, path: Path, size: int
) -> tuple[bytes, str]:
    """A one-layer v0.1 model whose GGUF layer is `size` random bytes; (manifest, layer digest)."""
    with path.open("wb") as stream:
        for _ in range(size >> 20):
            stream.write(os.urandom(1 << 20))
        stream.write(os.urandom(size & ((1 << 20) - 1)))
    config = b'{"config":{"format":"gguf"}}'
    layer = describe(path, media_types.GGUF)
    manifest = manifest_for(config, media_types.CONFIG_V01, [layer])
    await push_model(registry.url, repo, "latest", manifest, config, [path])
    return manifest, str(layer["digest"])


def _puller(settings: Settings, **options: float) -> Puller:
    return Puller(
        settings,
        ModelStore(settings.models_path),
        EventBus(),
        lambda: RegistryClient(settings),
        options=TransferOptions(**options),  # type: ignore[arg-type]
    )


def _good_blocks(partial: Path, source: bytes) -> bytearray:
    """1 per 4 KiB block of the partial that already holds the right bytes."""
    good = bytearray(-(-len(source) // _BLOCK))
    if not partial.exists():
        return good
    data = partial.read_bytes()
    for index in range(len(good)):
        piece = data[index * _BLOCK : (index + 1) * _BLOCK]
        good[index] = piece == source[index * _BLOCK : (index + 1) * _BLOCK]
    return good


def _gets(proxy: FaultProxy, digest: str, mark: int) -> list[ProxiedRequest]:
    """GETs of a blob since request number `mark`."""
    return [r for r in proxy.requests[mark:] if r.method == "GET" and digest in r.path]


def _refetched(requests: list[ProxiedRequest], good: bytearray) -> int:
    """Bytes the requests fetched again although the partial already held them."""
    total = 0
    for request in requests:
        start, stop = request.start, request.start + request.sent
        for block in range(start // _BLOCK, -(-stop // _BLOCK)):
            if good[block]:
                low, high = max(start, block * _BLOCK), min(stop, (block + 1) * _BLOCK)
                total += max(0, high - low)
    return total


async def test_kill_9_at_random_points_then_resume(
    proxy: FaultProxy, registry: RunningRegistry, tmp_path: Path
) -> None:
    """20 kill -9s mid-download of a 64 MiB blob in 4 ranges: every resume re-fetches <= 1 %."""
    size = 64 << 20
    manifest, digest = await _push_random(registry, "ai/killed", tmp_path / "blob.gguf", size)
    source = (tmp_path / "blob.gguf").read_bytes()
    root = tmp_path / "child"
    partial = root / "models" / "blobs" / "sha256" / f"{digest[7:]}.incomplete"
    reference = f"{proxy.host}/ai/killed"
    proxy.rate = 2 << 20  # per range; kills land mid-download
    rng = random.Random(20)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    kills = 0
    history: list[int] = []
    for attempt in range(KILLS + 1):
        good = _good_blocks(partial, source)
        on_disk = sum(good) * _BLOCK
        history.append(on_disk)
        mark = len(proxy.requests)
        last = attempt == KILLS
        if last:
            proxy.rate = None
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(_CHILD), str(root), reference, str(8 << 20),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        if not last:
            for _ in range(2000):
                if child.returncode is not None or _gets(proxy, digest, mark):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            if child.returncode is None:
                child.send_signal(signal.SIGKILL)
                kills += 1
        out, err = await asyncio.wait_for(child.communicate(), 120)
        attempt_gets = _gets(proxy, digest, mark)
        refetched = _refetched(attempt_gets, good)
        assert refetched <= on_disk // 100, (attempt, refetched, on_disk, attempt_gets)
        if last:
            assert child.returncode == 0, err.decode()
            assert out.decode().strip() == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert kills == KILLS
    assert history == sorted(history), history  # no kill lost bytes already on disk
    assert 0 < history[-1] < size, history  # the kills landed mid-download
    print("bytes on disk before each attempt:", history)
    store = ModelStore(root / "models")
    assert store.get(reference).id == "sha256:" + hashlib.sha256(manifest).hexdigest()
    blob = store.blob_path(digest)
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest[7:]
    assert not list(blob.parent.glob("*.incomplete*"))
    assert json.loads((root / "state" / "pulls.json").read_bytes())["pulls"] == []


async def test_stall_is_detected_and_retried(
    proxy: FaultProxy, registry: RunningRegistry, settings: Settings, tmp_path: Path
) -> None:
    size = 3 << 20
    _, digest = await _push_random(registry, "ai/stall", tmp_path / "blob.gguf", size)
    proxy.stall_after = 1 << 20
    puller = _puller(settings, stall_timeout=0.5, backoff=0.05)
    states: list[str] = []

    def report(event: PullProgressEvent) -> None:
        if isinstance(event, PullProgressed):
            states.append(event.state)

    try:
        await puller.pull(f"{proxy.host}/ai/stall", on_progress=report)
    finally:
        await puller.close()
    first, second = proxy.blob_gets(digest)
    assert first.sent == 1 << 20
    assert (second.start, second.sent) == (1 << 20, size - (1 << 20))
    assert "stalled" in states
    assert "retrying" in states
    assert states[-1] == "done"


async def test_parallel_ranges_with_a_stalled_range(
    proxy: FaultProxy, registry: RunningRegistry, settings: Settings, tmp_path: Path
) -> None:
    size = (8 << 20) + 12345
    manifest, digest = await _push_random(registry, "ai/ranges", tmp_path / "blob.gguf", size)
    proxy.stall_after = 512 << 10
    puller = _puller(
        settings, stall_timeout=0.5, backoff=0.05, parallel_threshold=1 << 20,
        piece_size=size // 4 + 1,
    )  # fmt: skip
    try:
        model = await puller.pull(f"{proxy.host}/ai/ranges")
    finally:
        await puller.close()
    assert model.id == "sha256:" + hashlib.sha256(manifest).hexdigest()
    gets = proxy.blob_gets(digest)
    assert len(gets) == 5  # four pieces, one of them stalled and resumed
    assert sum(request.sent for request in gets) == size
    assert {request.end for request in gets[:4]} == {size * i // 4 - 1 for i in (1, 2, 3)} | {None}
    assert hashlib.sha256(puller.store.blob_path(digest).read_bytes()).hexdigest() == digest[7:]


async def test_a_big_blob_comes_in_pieces_over_a_few_connections(
    proxy: FaultProxy, registry: RunningRegistry, settings: Settings, tmp_path: Path
) -> None:
    """Twelve pieces, three connections: every piece is asked for once, the hash checks them all."""
    size = (12 << 20) + 777
    manifest, digest = await _push_random(registry, "ai/pieces", tmp_path / "blob.gguf", size)
    puller = _puller(settings, parallel_threshold=1 << 20, piece_size=-(-size // 12), connections=3)
    try:
        model = await puller.pull(f"{proxy.host}/ai/pieces")
    finally:
        await puller.close()
    assert model.id == "sha256:" + hashlib.sha256(manifest).hexdigest()
    gets = proxy.blob_gets(digest)
    bounds = [size * i // 12 for i in range(13)]
    assert sorted(get.start for get in gets) == bounds[:12]
    assert sum(get.sent for get in gets) == size
    assert not list(puller.store.blob_path(digest).parent.glob("*.incomplete*"))


async def test_partial_left_by_dmr_is_resumed(
    proxy: FaultProxy, registry: RunningRegistry, settings: Settings, tmp_path: Path
) -> None:
    """A plain `.incomplete` prefix (DMR's kind, no sidecar) is continued with a Range."""
    size = 2 << 20
    _, digest = await _push_random(registry, "ai/dmr-partial", tmp_path / "blob.gguf", size)
    store = ModelStore(settings.models_path)
    partial = store.blob_path(digest).with_name(f"{digest[7:]}.incomplete")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes((tmp_path / "blob.gguf").read_bytes()[:700_000])
    puller = _puller(settings)
    try:
        await puller.pull(f"{proxy.host}/ai/dmr-partial")
    finally:
        await puller.close()
    [get] = proxy.blob_gets(digest)
    assert (get.start, get.sent) == (700_000, size - 700_000)


async def test_damaged_partial_is_fetched_again_once(
    proxy: FaultProxy, registry: RunningRegistry, settings: Settings, tmp_path: Path
) -> None:
    size = 1 << 20
    _, digest = await _push_random(registry, "ai/damaged", tmp_path / "blob.gguf", size)
    store = ModelStore(settings.models_path)
    partial = store.blob_path(digest).with_name(f"{digest[7:]}.incomplete")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(os.urandom(300_000))  # not the blob's first bytes
    puller = _puller(settings)
    try:
        await puller.pull(f"{proxy.host}/ai/damaged")
    finally:
        await puller.close()
    assert [(get.start, get.sent) for get in proxy.blob_gets(digest)] == [
        (300_000, size - 300_000),
        (0, size),
    ]
