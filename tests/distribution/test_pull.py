"""Pulls from a real docker-registry into a real store: shapes, refusals, sharing, cancel."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from modelrunner.core.distribution.progress import PullProgressEvent, dmr_progress_lines
from modelrunner.core.distribution.pull import Puller
from modelrunner.core.distribution.registry import DigestMismatch, RegistryClient
from modelrunner.core.distribution.transfer import TransferOptions
from modelrunner.core.distribution.validate import UnsupportedModel
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import PullFinished, PullProgressed
from modelrunner.core.settings import Settings
from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.package import build_gguf_artifact
from modelrunner.core.store.store import ModelStore
from tests.distribution.conftest import RunningRegistry
from tests.distribution.pull_fixtures import FaultProxy, describe, manifest_for, push_model
from tests.gguf_factory import write_sharded_gguf, write_tiny_gguf

MakePuller = Callable[..., Puller]


@pytest.fixture
async def make_puller(settings: Settings) -> AsyncIterator[MakePuller]:
    made: list[Puller] = []

    def make(
        options: TransferOptions | None = None,
        store: ModelStore | None = None,
        shared_client: bool = False,
    ) -> Puller:
        shared = RegistryClient(settings)
        puller = Puller(
            settings,
            store or ModelStore(settings.models_path),
            EventBus(),
            (lambda: shared) if shared_client else (lambda: RegistryClient(settings)),
            options=options,
        )
        made.append(puller)
        return puller

    yield make
    for puller in made:
        await puller.close()


@pytest.fixture
async def proxy(registry: RunningRegistry) -> AsyncIterator[FaultProxy]:
    relay = FaultProxy(registry.host)
    await relay.start()
    yield relay
    await relay.close()


async def _push_artifact(
    registry: RunningRegistry, repo: str, tag: str, gguf: Path, **kw: object
) -> bytes:
    artifact = build_gguf_artifact(gguf, **kw)  # type: ignore[arg-type]
    blobs: list[bytes | Path] = [layer.path for layer in artifact.layers]
    await push_model(registry.url, repo, tag, artifact.manifest_bytes, artifact.config_bytes, blobs)
    return artifact.manifest_bytes


def _check_stored(store: ModelStore, manifest: bytes, tag: str) -> None:
    """The index entry, manifest bytes, blobs and config exactly as the registry holds them."""
    model_id = "sha256:" + hashlib.sha256(manifest).hexdigest()
    model = store.get(tag)
    assert model.id == model_id
    assert store.manifest_bytes(model_id) == manifest
    document = json.loads(manifest)
    index = json.loads(store.layout.index_file.read_bytes())
    [entry] = [e for e in index["models"] if e["id"] == model_id]
    assert entry["tags"] == [tag]
    assert entry["files"] == [layer["digest"] for layer in document["layers"]] + [
        document["config"]["digest"]
    ]
    for descriptor in [*document["layers"], document["config"]]:
        blob = store.blob_path(descriptor["digest"])
        assert blob.stat().st_size == descriptor["size"]
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == descriptor["digest"]
    assert not list(store.layout.blobs_dir.glob("*/*.incomplete*"))


async def test_v01_single_gguf(
    registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    manifest = await _push_artifact(
        registry, "ai/single", "v1", write_tiny_gguf(tmp_path / "m.gguf")
    )
    puller = make_puller()
    model = await puller.pull(f"{registry.host}/ai/single:v1")
    _check_stored(puller.store, manifest, f"{registry.host}/ai/single:v1")
    assert model.config["format"] == "gguf"
    bundle = puller.store.bundle(model.id)
    assert bundle.gguf.name == "model.gguf"
    assert bundle.gguf.read_bytes() == (tmp_path / "m.gguf").read_bytes()


async def test_multipart_gguf(
    registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    shards = write_sharded_gguf(tmp_path / "split.gguf", shards=3)
    manifest = await _push_artifact(registry, "ai/split", "latest", shards[0])
    assert len(json.loads(manifest)["layers"]) == 3
    puller = make_puller()
    model = await puller.pull(f"{registry.host}/ai/split")
    _check_stored(puller.store, manifest, f"{registry.host}/ai/split:latest")
    bundle = puller.store.bundle(model.id)
    assert bundle.gguf.name == "model-00001-of-00003.gguf"


async def test_mmproj_template_license(
    registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "m.gguf")
    mmproj = write_tiny_gguf(tmp_path / "mmproj.gguf", seed=3)
    template = tmp_path / "template.jinja"
    template.write_text("{{ messages }}")
    license_file = tmp_path / "LICENSE"
    license_file.write_text("FAKE LICENSE\n")
    manifest = await _push_artifact(
        registry,
        "ai/vision",
        "q4",
        gguf,
        mmproj=mmproj,
        chat_template=template,
        licenses=[license_file],
    )
    types = [layer["mediaType"] for layer in json.loads(manifest)["layers"]]
    assert types == [
        media_types.GGUF,
        media_types.LICENSE,
        media_types.CHAT_TEMPLATE,
        media_types.MMPROJ,
    ]
    puller = make_puller()
    model = await puller.pull(f"{registry.host}/ai/vision:q4")
    _check_stored(puller.store, manifest, f"{registry.host}/ai/vision:q4")
    bundle = puller.store.bundle(model.id)
    assert bundle.mmproj is not None
    assert bundle.mmproj.read_bytes() == mmproj.read_bytes()
    assert bundle.chat_template is not None
    assert bundle.chat_template.read_text() == "{{ messages }}"


async def test_v02_with_annotations(
    registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "weights.gguf")
    extra = tmp_path / "config.json"
    extra.write_text('{"max_position_embeddings": 512}')
    layers = [describe(gguf, media_types.GGUF), describe(extra, media_types.MODEL_FILE)]
    config = go_json.marshal({
        "config": {"format": "gguf", "context_size": 512},
        "descriptor": {"created": "2025-06-15T12:00:00Z"},
        "rootfs": {"type": "rootfs", "diff_ids": [layer["digest"] for layer in layers]},
    })  # fmt: skip
    manifest = manifest_for(config, media_types.CONFIG_V02, layers)
    await push_model(registry.url, "ai/v02", "latest", manifest, config, [gguf, extra])
    puller = make_puller()
    model = await puller.pull(f"{registry.host}/ai/v02")
    _check_stored(puller.store, manifest, f"{registry.host}/ai/v02:latest")
    bundle = puller.store.bundle(model.id)
    assert bundle.gguf.name == "weights.gguf"
    assert (bundle.root / "model" / "config.json").read_text() == extra.read_text()


async def test_cncf_modelpack(
    registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "model.gguf")
    license_file = tmp_path / "LICENSE"
    license_file.write_text("FAKE LICENSE\n")
    layers = [
        describe(gguf, media_types.CNCF_WEIGHT_RAW),
        describe(license_file, media_types.CNCF_DOC_RAW),
    ]
    config = go_json.marshal({
        "descriptor": {"createdAt": "2025-06-15T12:00:00Z", "family": "llama"},
        "modelfs": {"type": "layers", "diffIds": [layer["digest"] for layer in layers]},
        "config": {"architecture": "llama", "format": "gguf", "paramSize": "183",
                   "quantization": "F32"},
    })  # fmt: skip
    manifest = manifest_for(
        config, media_types.CNCF_CONFIG, layers, media_types.CNCF_MANIFEST_ARTIFACT
    )
    await push_model(registry.url, "ai/cncf", "latest", manifest, config, [gguf, license_file])
    puller = make_puller()
    model = await puller.pull(f"{registry.host}/ai/cncf")
    _check_stored(puller.store, manifest, f"{registry.host}/ai/cncf:latest")
    assert model.config["parameters"] == "183"
    assert puller.store.bundle(model.id).gguf.name == "model.gguf"


async def test_image_index_one_level(
    registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    manifest = await _push_artifact(
        registry, "ai/indexed", "inner", write_tiny_gguf(tmp_path / "m.gguf")
    )
    index = go_json.marshal({
        "schemaVersion": 2, "mediaType": media_types.OCI_INDEX,
        "manifests": [{"mediaType": media_types.OCI_MANIFEST, "size": len(manifest),
                       "digest": "sha256:" + hashlib.sha256(manifest).hexdigest()}],
    })  # fmt: skip
    import aiohttp

    from tests.distribution.pull_fixtures import push_manifest

    async with aiohttp.ClientSession() as session:
        await push_manifest(
            session, registry.url, "ai/indexed", "latest", index, media_types.OCI_INDEX
        )
    puller = make_puller()
    await puller.pull(f"{registry.host}/ai/indexed:latest")
    _check_stored(puller.store, manifest, f"{registry.host}/ai/indexed:latest")


def _nothing_stored(store: ModelStore) -> None:
    assert json.loads(store.layout.index_file.read_bytes())["models"] in ([], None)
    assert not list(store.layout.manifests_dir.glob("*"))
    assert not list(store.layout.blobs_dir.glob("*/*"))


@pytest.mark.parametrize("which", ["config", "layer"])
async def test_unknown_media_type_is_refused(
    which: str, registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    blob = tmp_path / "weights.bin"
    blob.write_bytes(os.urandom(4096))
    layer_type = "application/vnd.example.weights" if which == "layer" else media_types.GGUF
    config_type = (
        "application/vnd.example.config+json" if which == "config" else media_types.CONFIG_V01
    )
    config = b'{"config":{"format":"gguf"}}'
    manifest = manifest_for(config, config_type, [describe(blob, layer_type)])
    await push_model(registry.url, f"ai/odd-{which}", "latest", manifest, config, [blob])
    puller = make_puller()
    with pytest.raises(UnsupportedModel) as caught:
        await puller.pull(f"{registry.host}/ai/odd-{which}")
    assert caught.value.status == 422
    assert (
        "config media type" if which == "config" else "application/vnd.example.weights"
    ) in caught.value.message
    _nothing_stored(puller.store)
    assert puller.queue.pending() == []


async def test_wrong_blob_is_rejected(
    proxy: FaultProxy, registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    manifest = await _push_artifact(
        registry, "ai/wrong", "latest", write_tiny_gguf(tmp_path / "m.gguf")
    )
    proxy.corrupt = json.loads(manifest)["layers"][0]["digest"]
    puller = make_puller(TransferOptions(backoff=0.01))
    events: list[PullProgressEvent] = []
    with pytest.raises(DigestMismatch, match="wrong content"):
        await puller.pull(f"{proxy.host}/ai/wrong", on_progress=events.append)
    _nothing_stored(puller.store)
    assert any(getattr(e, "state", "") == "failed" for e in events)


async def test_cached_manifest_only_tags(
    proxy: FaultProxy, registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    manifest = await _push_artifact(
        registry, "ai/cached", "a", write_tiny_gguf(tmp_path / "m.gguf")
    )
    await push_model(registry.url, "ai/cached", "b", manifest, b"", [])  # same manifest, 2nd tag
    puller = make_puller()
    first = await puller.pull(f"{proxy.host}/ai/cached:a")
    gets = len(proxy.blob_gets())
    events: list[PullProgressEvent] = []
    second = await puller.pull(f"{proxy.host}/ai/cached:b", on_progress=events.append)
    assert second.id == first.id
    assert len(proxy.blob_gets()) == gets  # nothing fetched
    assert set(second.tags) == {f"{proxy.host}/ai/cached:a", f"{proxy.host}/ai/cached:b"}
    assert next(e for e in events if isinstance(e, PullFinished)).cached


async def test_two_pulls_share_one_download(
    proxy: FaultProxy, registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    blob = tmp_path / "big.gguf"
    blob.write_bytes(os.urandom(3 << 20))
    config = b'{"config":{"format":"gguf"}}'
    manifest = manifest_for(config, media_types.CONFIG_V01, [describe(blob, media_types.GGUF)])
    await push_model(registry.url, "ai/shared", "latest", manifest, config, [blob])
    await push_model(registry.url, "ai/shared", "other", manifest, b"", [])
    proxy.rate = 4 << 20
    puller = make_puller(shared_client=True)  # as the facade wires it: one client for all jobs
    reference = f"{proxy.host}/ai/shared"
    a, b, c = await asyncio.gather(
        puller.pull(reference), puller.pull(reference), puller.pull(f"{reference}:other")
    )
    assert a.id == b.id == c.id
    digest = json.loads(manifest)["layers"][0]["digest"]
    assert len(proxy.blob_gets(digest)) == 1
    assert set(puller.store.get(a.id).tags) == {f"{reference}:latest", f"{reference}:other"}


async def test_cancel_leaves_no_entry_and_resume_finishes(
    proxy: FaultProxy, registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    blob = tmp_path / "w.gguf"
    blob.write_bytes(os.urandom(4 << 20))
    config = b'{"config":{"format":"gguf"}}'
    manifest = manifest_for(config, media_types.CONFIG_V01, [describe(blob, media_types.GGUF)])
    await push_model(registry.url, "ai/cancel", "latest", manifest, config, [blob])
    proxy.rate = 2 << 20
    puller = make_puller()
    reference = f"{proxy.host}/ai/cancel"
    progressed = asyncio.Event()

    def report(event: PullProgressEvent) -> None:
        if isinstance(event, PullProgressed) and event.current > (1 << 20):
            progressed.set()

    pulling = asyncio.ensure_future(puller.pull(reference, on_progress=report))
    await asyncio.wait_for(progressed.wait(), 30)
    assert [status.reference for status in puller.active()] == [f"{reference}:latest"]
    assert await puller.cancel(reference)
    with pytest.raises(asyncio.CancelledError):
        await pulling
    assert json.loads(puller.store.layout.index_file.read_bytes())["models"] == []
    assert puller.queue.pending() == []
    [partial] = puller.store.layout.blobs_dir.glob("*/*.incomplete")
    on_disk = partial.stat().st_size
    assert on_disk > (1 << 20)
    proxy.rate = None
    before = len(proxy.requests)
    await puller.pull(reference)
    [get] = [r for r in proxy.requests[before:] if r.method == "GET" and "/blobs/" in r.path
             and r.path.endswith(json.loads(manifest)["layers"][0]["digest"])]  # fmt: skip
    assert get.start == on_disk
    assert get.sent == blob.stat().st_size - on_disk


async def test_queue_survives_close_and_resumes(
    proxy: FaultProxy, registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    blob = tmp_path / "w.gguf"
    blob.write_bytes(os.urandom(2 << 20))
    config = b'{"config":{"format":"gguf"}}'
    manifest = manifest_for(config, media_types.CONFIG_V01, [describe(blob, media_types.GGUF)])
    await push_model(registry.url, "ai/queued", "latest", manifest, config, [blob])
    proxy.rate = 1 << 20
    first = make_puller()
    reference = f"{proxy.host}/ai/queued:latest"
    pulling = asyncio.ensure_future(first.pull(reference))
    await asyncio.sleep(0.5)
    await first.close()
    with pytest.raises(asyncio.CancelledError):
        await pulling
    assert first.queue.pending() == [reference]
    proxy.rate = None
    second = make_puller(store=first.store)
    await second.resume_pending()
    [status] = second.active()
    assert status.reference == reference
    for _ in range(3000):
        if not second.active():
            break
        await asyncio.sleep(0.01)
    _check_stored(second.store, manifest, reference)
    assert second.queue.pending() == []


async def test_progress_events_and_dmr_stream(
    registry: RunningRegistry, make_puller: MakePuller, tmp_path: Path
) -> None:
    blob = tmp_path / "w.gguf"
    blob.write_bytes(os.urandom(3 << 20))
    config = b'{"config":{"format":"gguf","size":"3MiB"}}'
    manifest = manifest_for(config, media_types.CONFIG_V01, [describe(blob, media_types.GGUF)])
    await push_model(registry.url, "ai/progress", "latest", manifest, config, [blob])
    puller = make_puller()
    reference = f"{registry.host}/ai/progress"
    lines = [
        json.loads(line)
        async for line in dmr_progress_lines(
            lambda report: puller.pull(reference, on_progress=report)
        )
    ]
    digest = json.loads(manifest)["layers"][0]["digest"]
    progress = [line for line in lines if line["type"] == "progress"]
    assert progress
    assert all(list(line) == ["type", "message", "total", "layer", "mode"] for line in lines)
    assert progress[-1]["layer"] == {"id": digest, "size": 3 << 20, "current": 3 << 20}
    assert progress[-1]["total"] == 3 << 20
    assert progress[-1]["message"] == "Downloaded: 3.00 MB"
    assert lines[-1] == {"type": "success", "message": "Model pulled successfully", "total": 0,
                         "layer": {"size": 0, "current": 0}, "mode": "pull"}  # fmt: skip
    again = [json.loads(line) async for line in dmr_progress_lines(
        lambda report: puller.pull(reference, on_progress=report))]  # fmt: skip
    assert again == [{"type": "success", "message": "Using cached model: 3MiB", "total": 0,
                      "layer": {"size": 0, "current": 0}, "mode": "pull"}]  # fmt: skip
    missing = [line async for line in dmr_progress_lines(
        lambda report: puller.pull(f"{registry.host}/ai/nothing-here", on_progress=report),
        html_escape=True)]  # fmt: skip
    assert len(missing) == 1
    assert missing[0].startswith(b"{&#34;type&#34;:&#34;error&#34;")
