"""Push a packaged store model to a real registry; skopeo, an independent client, checks it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelrunner.core.distribution.auth import AuthenticationRequired
from modelrunner.core.distribution.push import PushProgress, push_model
from modelrunner.core.distribution.registry import RegistryClient
from modelrunner.core.errors import InvalidInput, InvalidReference
from modelrunner.core.references import parse_reference
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore, StoredModel
from tests.distribution.conftest import RunningRegistry
from tests.gguf_factory import write_tiny_gguf


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RegistryClient]:
    registry_client = RegistryClient(settings)
    yield registry_client
    await registry_client.close()


@pytest.fixture
def store(settings: Settings) -> ModelStore:
    return ModelStore(settings.models_path)


def package(store: ModelStore, tmp_path: Path, tag: str, seed: int = 0) -> StoredModel:
    gguf = write_tiny_gguf(tmp_path / f"tiny-{seed}.gguf", seed=seed)
    license_file = tmp_path / "LICENSE"
    license_file.write_text("FAKE LICENSE\n")
    return store.package_gguf(gguf, tag, licenses=[license_file])


def skopeo_raw(skopeo: str, registry: RunningRegistry, name: str, *extra: str) -> bytes:
    return subprocess.run(
        [
            skopeo,
            "inspect",
            "--raw",
            "--tls-verify=false",
            *extra,
            f"docker://{registry.host}/{name}",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def sha256_file(path: Path) -> str:
    with path.open("rb") as stream:
        return "sha256:" + hashlib.file_digest(stream, "sha256").hexdigest()


async def test_push_is_byte_identical_for_skopeo(
    registry: RunningRegistry,
    client: RegistryClient,
    store: ModelStore,
    skopeo: str,
    tmp_path: Path,
) -> None:
    tag = f"{registry.host}/push/tiny:v1"
    model = package(store, tmp_path, tag)
    events: list[PushProgress] = []
    result = await client.push_model(store, tag, on_progress=events.append)

    manifest = store.manifest_bytes(model.id)
    assert result.digest == model.id
    assert skopeo_raw(skopeo, registry, "push/tiny:v1") == manifest
    document = json.loads(manifest)
    assert len(result.uploaded) == len(document["layers"]) == 2
    assert (result.existing, result.mounted) == ((), ())

    copy = tmp_path / "copy"
    await asyncio.to_thread(
        subprocess.run,
        [skopeo, "copy", "--src-tls-verify=false", f"docker://{tag}", f"dir:{copy}"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert (copy / "manifest.json").read_bytes() == manifest
    for entry in [document["config"], *document["layers"]]:
        copied = copy / entry["digest"].removeprefix("sha256:")
        assert sha256_file(copied) == entry["digest"]
        assert copied.read_bytes() == store.blob_path(entry["digest"]).read_bytes()

    total = sum(layer["size"] for layer in document["layers"])
    finals = {e.digest: e for e in events if e.state == "uploaded"}
    assert set(finals) == {layer["digest"] for layer in document["layers"]}
    assert all(e.current == e.size and e.total == total for e in finals.values())
    assert all(e.reference == f"{registry.host}/push/tiny:v1" for e in events)
    assert finals[document["layers"][0]["digest"]].message.startswith("Uploaded: 0.")


async def test_a_second_push_uploads_nothing(
    registry: RunningRegistry, client: RegistryClient, store: ModelStore, tmp_path: Path
) -> None:
    tag = f"{registry.host}/push/again:v1"
    model = package(store, tmp_path, tag, seed=1)
    await push_model(client, store, tag)
    uploads_before = registry.log().count("PUT /v2/push/again/blobs/uploads/")

    events: list[PushProgress] = []
    result = await push_model(client, store, tag, on_progress=events.append)
    assert result.uploaded == ()
    assert len(result.existing) == 2
    assert {e.state for e in events} == {"exists"}
    assert registry.log().count("PUT /v2/push/again/blobs/uploads/") == uploads_before
    assert result.digest == model.id


async def test_a_second_repository_mounts_the_blobs(
    registry: RunningRegistry, client: RegistryClient, store: ModelStore, tmp_path: Path
) -> None:
    first = f"{registry.host}/push/origin:v1"
    model = package(store, tmp_path, first, seed=2)
    await push_model(client, store, first)
    second = f"{registry.host}/push/mounted:v1"
    store.tag(first, second)

    result = await push_model(client, store, second)
    assert len(result.mounted) == 2
    assert result.uploaded == ()
    log = registry.log()
    mounts = re.findall(r'"POST /v2/push/mounted/blobs/uploads/\?([^ ]*) HTTP', log)
    assert len(mounts) == 3  # two layers and the config
    assert all("from=push/origin" in query and "mount=sha256" in query for query in mounts)
    assert "PUT /v2/push/mounted/blobs/uploads/" not in log
    assert "PATCH /v2/push/mounted/" not in log

    manifest = await client.get_manifest(parse_reference(f"{second}"))
    assert manifest.digest == model.id


async def test_push_to_a_token_registry_needs_a_login(
    token_registry: RunningRegistry,
    client: RegistryClient,
    store: ModelStore,
    settings: Settings,
    tmp_path: Path,
    skopeo: str,
) -> None:
    tag = f"{token_registry.host}/push/secured:v1"
    model = package(store, tmp_path, tag, seed=3)
    with pytest.raises(AuthenticationRequired, match="to push") as caught:
        await push_model(client, store, tag)
    assert caught.value.status == 401
    assert f"modelrunner login {token_registry.host}" in caught.value.message

    await client.login(token_registry.host, token_registry.username or "", "s3cret")
    authed = RegistryClient(settings)
    try:
        result = await push_model(authed, store, tag)
    finally:
        await authed.close()
    assert result.digest == model.id
    raw = skopeo_raw(skopeo, token_registry, "push/secured:v1", "--creds", token_registry.creds)
    assert raw == store.manifest_bytes(model.id)


async def test_push_targets_are_checked(
    client: RegistryClient, store: ModelStore, tmp_path: Path
) -> None:
    model = package(store, tmp_path, "127.0.0.1:9/push/targets:v1", seed=4)
    with pytest.raises(InvalidInput, match="give a name"):
        await push_model(client, store, model.id)
    with pytest.raises(InvalidReference, match="digest"):
        await push_model(
            client, store, model.id, parse_reference(f"127.0.0.1:9/push/targets@{model.id}")
        )
    with pytest.raises(InvalidInput, match="Hugging Face"):
        await push_model(client, store, model.id, parse_reference("hf.co/org/model:v1"))
