"""RegistryClient against a real docker-registry: manifests, indexes, digests, blobs and ranges."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.distribution.registry import (
    DigestMismatch,
    RegistryClient,
    RegistryUnavailable,
    UnsupportedManifest,
    registry_base_url,
)
from modelrunner.core.errors import ModelNotFound
from modelrunner.core.references import ModelReference, parse_reference
from modelrunner.core.settings import Settings
from tests.distribution.conftest import RunningRegistry
from tests.distribution.seeding import (
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    put_blob,
    put_manifest,
    seed_model,
)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RegistryClient]:
    registry_client = RegistryClient(settings)
    yield registry_client
    await registry_client.close()


def ref(registry: RunningRegistry, name: str) -> ModelReference:
    return parse_reference(f"{registry.host}/{name}")


async def read_all(
    client: RegistryClient, reference: ModelReference, digest: str, **kw: int
) -> tuple[int, bytes]:
    stream = await client.open_blob(reference, digest, **kw)
    async with stream:
        return stream.status, b"".join([chunk async for chunk in stream])


async def test_manifest_by_tag_is_the_raw_bytes(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    raw, _, _ = seed_model(registry, "reg/bytag", "v1")
    manifest = await client.get_manifest(ref(registry, "reg/bytag:v1"))
    assert manifest.raw == raw
    assert manifest.digest == digest_of(raw)
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.index_digest is None


async def test_manifest_by_digest(registry: RunningRegistry, client: RegistryClient) -> None:
    raw, _, _ = seed_model(registry, "reg/bydigest", "v1")
    manifest = await client.get_manifest(ref(registry, f"reg/bydigest@{digest_of(raw)}"))
    assert manifest.raw == raw


async def test_a_manifest_that_does_not_match_its_digest_is_refused(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    raw, _, _ = seed_model(registry, "reg/tampered", "v1", weights=b"tampered weights")
    digest = digest_of(raw)
    # Damage the stored manifest blob on the registry's disk, keeping it valid JSON.
    data = registry.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    data.write_bytes(raw.replace(b"gguf.v3", b"gguf.v4"))
    with pytest.raises(DigestMismatch, match="digest mismatch") as caught:
        await client.get_manifest(ref(registry, f"reg/tampered@{digest}"))
    assert caught.value.status == 502


async def test_unknown_model_is_not_found(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    with pytest.raises(ModelNotFound) as caught:
        await client.get_manifest(ref(registry, "reg/nothing:here"))
    assert caught.value.status == 404
    seed_model(registry, "reg/sometags", "v1")
    with pytest.raises(ModelNotFound, match="reg/sometags:v2"):
        await client.get_manifest(ref(registry, "reg/sometags:v2"))


async def test_index_is_followed_one_level_to_the_model(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    # A non-model image manifest first, then the model: the model is picked by its config type.
    image_config = b'{"architecture":"amd64","os":"linux"}'
    put_blob(registry, "reg/indexed", image_config)
    image = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", image_config),
            "layers": [],
        }
    ).encode()
    put_manifest(registry, "reg/indexed", digest_of(image), image, OCI_MANIFEST)
    model_raw, _, _ = seed_model(registry, "reg/indexed", "model-only")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, image, platform={"architecture": "amd64", "os": "linux"}),
                descriptor(OCI_MANIFEST, model_raw),
            ],
        }
    ).encode()
    put_manifest(registry, "reg/indexed", "v1", index, OCI_INDEX)

    manifest = await client.get_manifest(ref(registry, "reg/indexed:v1"))
    assert manifest.raw == model_raw
    assert manifest.digest == digest_of(model_raw)
    assert manifest.index_digest == digest_of(index)

    only_image = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, image)] * 2,
        }
    ).encode()
    put_manifest(registry, "reg/indexed", "images", only_image, OCI_INDEX)
    with pytest.raises(UnsupportedManifest) as caught:
        await client.get_manifest(ref(registry, "reg/indexed:images"))
    assert caught.value.status == 422


async def test_unknown_config_type_comes_back_raw_for_the_puller(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    raw, _, _ = seed_model(
        registry, "reg/future", "v1", config_type="application/vnd.docker.ai.model.config.v9+json"
    )
    manifest = await client.get_manifest(ref(registry, "reg/future:v1"))
    assert manifest.raw == raw
    assert json.loads(manifest.raw)["config"]["mediaType"].endswith("v9+json")


async def test_blob_size_and_full_and_ranged_reads(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    weights = bytes(range(256)) * 4096  # 1 MiB
    _, config, _ = seed_model(registry, "reg/blobs", "v1", weights=weights)
    reference = ref(registry, "reg/blobs:v1")
    digest = digest_of(weights)

    assert await client.blob_size(reference, digest) == (len(weights), True)
    assert await read_all(client, reference, digest) == (200, weights)
    assert await read_all(client, reference, digest, start=1000) == (206, weights[1000:])
    assert await read_all(client, reference, digest, start=10, end=19) == (206, weights[10:20])
    stream = await client.open_blob(reference, digest, start=5)
    assert (stream.status, stream.start, stream.length) == (206, 5, len(weights) - 5)
    await stream.aclose()
    assert await client.read_blob(reference, digest_of(config)) == config
    with pytest.raises(ModelNotFound):
        await client.blob_size(reference, digest_of(b"not there"))
    with pytest.raises(ModelNotFound):
        await client.open_blob(reference, digest_of(b"not there"))


async def test_a_dead_registry_fails_fast_with_a_clear_error(client: RegistryClient) -> None:
    started = time.monotonic()
    with pytest.raises(
        RegistryUnavailable, match=r"cannot reach registry 127\.0\.0\.1:9"
    ) as caught:
        await client.get_manifest(parse_reference("127.0.0.1:9/some/model:v1"))
    assert time.monotonic() - started < 5
    assert caught.value.status == 502


def test_registry_urls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert str(registry_base_url("docker.io")) == "https://registry-1.docker.io"
    assert str(registry_base_url("localhost:5000")) == "http://localhost:5000"
    assert str(registry_base_url("127.0.0.1:5000")) == "http://127.0.0.1:5000"
    assert str(registry_base_url("[::1]:5000")) == "http://[::1]:5000"
    assert str(registry_base_url("ghcr.io")) == "https://ghcr.io"
    assert str(registry_base_url("reg.example:443", frozenset({"reg.example"}))) == (
        "http://reg.example:443"
    )
    monkeypatch.setenv("MODELRUNNER_INSECURE_REGISTRIES", "reg.example:5000, other.example")
    settings = Settings(tmp_path, tmp_path, tmp_path, tmp_path)
    registry_client = RegistryClient(settings)
    assert registry_client.base_url("reg.example:5000").scheme == "http"
    assert registry_client.base_url("other.example").scheme == "http"
    assert registry_client.base_url("third.example").scheme == "https"
    monkeypatch.setenv("INSECURE_REGISTRY", "true")
    assert RegistryClient(settings).base_url("third.example").scheme == "http"
