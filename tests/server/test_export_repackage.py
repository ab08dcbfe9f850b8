"""GET /models/{name}/export and POST /models/{name}/repackage on real stores, byte for byte."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import logging
import os
import tarfile
import threading
from pathlib import Path

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.package import Artifact
from modelrunner.core.store.store import ModelStore, StoredModel
from tests.gguf_factory import write_tiny_gguf
from tests.server.conftest import TINY
from tests.server.test_logs_routes import open_log_descriptors, wait_for


def _blob_files(store: ModelStore) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (store.root / "blobs" / "sha256").iterdir()}


async def test_export_is_dmrs_tarball_and_loads_into_another_store(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel, tmp_path: Path
) -> None:
    response = await client.get(f"/models/{TINY}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert response.headers["content-disposition"] == f'attachment; filename="{TINY}.tar"'
    tarball = response.content

    manifest_bytes = runner.store.manifest_bytes(TINY)
    manifest = json.loads(manifest_bytes)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        members = archive.getmembers()
        names = [member.name for member in members]
        assert names == [
            "blobs",
            "blobs/sha256",
            *[f"blobs/sha256/{layer['digest'][7:]}" for layer in manifest["layers"]],
            f"blobs/sha256/{manifest['config']['digest'][7:]}",
            "manifest.json",
        ]
        # As Go's archive/tar writes DMR's headers: no times, owners or trailing slashes.
        assert all(
            member.mtime == 0 and member.uid == 0 and member.uname == "" for member in members
        )
        assert [oct(member.mode) for member in members[:2]] == ["0o755", "0o755"]
        assert {oct(member.mode) for member in members[2:]} == {"0o666"}
        exported_manifest = archive.extractfile("manifest.json")
        assert exported_manifest is not None
        assert exported_manifest.read() == manifest_bytes
    assert tarball.endswith(b"\0" * 1024)
    assert len(tarball) % 512 == 0
    # Two zero blocks end it, with no record padding after (Go's tar.Writer.Close).
    assert tarball[-1536:-1024].rstrip(b"\0").endswith(manifest_bytes[-20:])

    other = ModelStore(tmp_path / "other-store")
    assert other.load_archive(io.BytesIO(tarball)) == tiny_model.id
    assert other.manifest_bytes(tiny_model.id) == manifest_bytes
    assert _blob_files(other) == _blob_files(runner.store)
    assert other.get(tiny_model.id).config == tiny_model.config


async def test_export_answers_404_and_keeps_names_ending_in_export_reachable(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_gguf: Path
) -> None:
    response = await client.get("/models/ai/missing/export")
    assert response.status_code == 404
    assert "missing" in response.text
    await runner.package_model(tiny_gguf, "ai/export:latest")
    # DMR: a last segment "export" is the action, so the model is reached with its tag.
    response = await client.get("/models/ai/export:latest")
    assert response.status_code == 200
    assert response.json()["tags"] == ["docker.io/ai/export:latest"]
    response = await client.get("/models/export")  # no name before it: a model's name
    assert response.status_code == 200
    assert response.json()["tags"] == ["docker.io/ai/export:latest"]
    response = await client.get("/models/ai/export:latest/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-tar"


async def test_export_streams_through_uvicorn_and_a_leaving_client_frees_it(
    live_url: str, runner: ModelRunner, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(hashlib.sha256(b"seed").digest() * (12 << 15))  # 12 MiB
    model = await runner.package_model(
        write_tiny_gguf(tmp_path / "t.gguf"), "ai/big", licenses=[big]
    )
    async with httpx.AsyncClient(base_url=live_url) as http:
        async with http.stream("GET", "/models/ai/big/export") as response:
            assert response.status_code == 200
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > 2 << 20:
                    break  # leave early
        # The server is still fine, and a full export matches the store.
        response = await http.get("/models/ai/big/export")
    other = ModelStore(tmp_path / "other")
    assert other.load_archive(io.BytesIO(response.content)) == model.id
    assert (
        other.root / "blobs" / "sha256" / hashlib.sha256(big.read_bytes()).hexdigest()
    ).is_file()


async def test_repackage_shares_layers_and_sets_context_size(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    blobs_before = {
        name: (runner.store.root / "blobs" / "sha256" / name).stat().st_ino
        for name in _blob_files(runner.store)
    }
    response = await client.post(
        f"/models/{TINY}/repackage", json={"target": "ai/tiny-long:v1", "context_size": 8192}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "message": 'Model repackaged successfully as "ai/tiny-long:v1"',
        "source": TINY,
        "target": "ai/tiny-long:v1",
    }
    answer = (await client.get("/models/ai/tiny-long:v1")).json()
    assert answer["id"] != tiny_model.id
    assert answer["tags"] == ["docker.io/ai/tiny-long:v1"]
    assert answer["config"]["context_size"] == 8192
    assert {k: v for k, v in answer["config"].items() if k != "context_size"} == {
        k: v for k, v in tiny_model.config.items() if k != "context_size"
    }
    source_manifest = json.loads(runner.store.manifest_bytes(TINY))
    new_manifest = json.loads(runner.store.manifest_bytes("ai/tiny-long:v1"))
    assert new_manifest["layers"] == source_manifest["layers"]
    assert new_manifest["config"]["mediaType"] == source_manifest["config"]["mediaType"]
    assert new_manifest["config"]["digest"] != source_manifest["config"]["digest"]
    # Only one new blob (the config); the layer blob files are the very same inodes.
    blobs_after = _blob_files(runner.store)
    assert set(blobs_after) - set(blobs_before) == {new_manifest["config"]["digest"][7:]}
    for name, inode in blobs_before.items():
        assert (runner.store.root / "blobs" / "sha256" / name).stat().st_ino == inode
    new_config = json.loads(blobs_after[new_manifest["config"]["digest"][7:]])
    old_config = json.loads(blobs_after[source_manifest["config"]["digest"][7:]])
    assert new_config["descriptor"] == old_config["descriptor"]
    assert new_config["rootfs"] == old_config["rootfs"]
    # The source is untouched, and removing it leaves the repackaged model whole.
    assert (await client.get(f"/models/{TINY}")).json()["id"] == tiny_model.id
    assert (await client.delete(f"/models/{TINY}")).status_code == 200
    assert runner.store.bundle("ai/tiny-long:v1").gguf.is_file()


async def test_repackage_config_is_byte_exact_go_marshalling(
    runner: ModelRunner, tiny_gguf: Path
) -> None:
    model = await runner.package_model(tiny_gguf, "ai/tiny:v1", context_size=2048)
    again = await runner.repackage_model("ai/tiny:v1", "ai/tiny:v2", context_size=2048)
    # The same context size gives back the very same config and manifest (Go's byte layout).
    assert again.id == model.id
    assert runner.store.get("ai/tiny:v1").tags == ("docker.io/ai/tiny:v1", "docker.io/ai/tiny:v2")


async def test_repackage_without_context_size_only_tags(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.post(f"/models/{TINY}/repackage", json={"target": "ai/same:v1"})
    assert response.status_code == 201
    assert (await client.get("/models/ai/same:v1")).json()["id"] == tiny_model.id


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "target is required"),
        ({"target": ""}, "target is required"),
        ({"target": 5}, "target must be a string"),
        ({"target": "ai/x", "context_size": 0}, "context_size must be"),
        ({"target": "ai/x", "context_size": -1}, "context_size must be"),
        ({"target": "ai/x", "context_size": 2**31}, "context_size must be"),
        ({"target": "ai/x", "context_size": "4096"}, "context_size must be"),
        ({"target": "ai/x", "context_size": True}, "context_size must be"),
        ({"target": "Bad Name!", "context_size": 4096}, "Bad Name!"),
        ({"target": "ai/x@sha256:" + "a" * 64, "context_size": 4096}, "digest"),
    ],
)
async def test_repackage_bad_input_is_400(
    client: httpx.AsyncClient, tiny_model: StoredModel, body: dict[str, object], words: str
) -> None:
    response = await client.post(f"/models/{TINY}/repackage", json=body)
    assert response.status_code == 400, response.text
    assert words in response.text
    assert [model["id"] for model in (await client.get("/models")).json()] == [tiny_model.id]


async def test_repackage_bad_body_and_missing_source(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.post(f"/models/{TINY}/repackage", content=b"{not json")
    assert response.status_code == 400
    response = await client.post(
        "/models/ai/nothing/repackage", json={"target": "ai/x", "context_size": 4096}
    )
    assert response.status_code == 404
    assert "nothing" in response.text


async def test_repackage_of_a_v02_model_keeps_its_config_media_type(
    runner: ModelRunner, settings: Settings, tiny_model: StoredModel
) -> None:
    """DMR writes V0.1 for every repackaged model (its quirk); we keep the source's type."""
    store = runner.store
    manifest = json.loads(store.manifest_bytes(TINY))
    manifest["config"]["mediaType"] = media_types.CONFIG_V02
    with store.open_export(TINY) as export:
        artifact = Artifact(
            go_json.marshal(manifest), export.artifact.config_bytes, export.artifact.layers
        )
    v02 = store.write(artifact, ["ai/v02:latest"])
    repackaged = await runner.repackage_model("ai/v02", "ai/v02:long", context_size=4096)
    assert repackaged.id != v02.id
    assert json.loads(store.manifest_bytes("ai/v02:long"))["config"]["mediaType"] == (
        media_types.CONFIG_V02
    )


async def test_a_client_leaving_a_slow_export_frees_its_thread_and_files_quietly(
    live_url: str, runner: ModelRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(hashlib.sha256(b"seed").digest() * (32 << 15))  # 32 MiB: the queue fills
    await runner.package_model(write_tiny_gguf(tmp_path / "t.gguf"), "ai/big", licenses=[big])
    blobs = runner.store.layout.blobs_dir
    threads = threading.active_count()
    for _ in range(3):
        async with (
            httpx.AsyncClient(base_url=live_url) as http,
            http.stream("GET", "/models/ai/big/export") as response,
        ):
            chunks = response.aiter_raw()
            await anext(chunks)
            await asyncio.sleep(0.3)  # the writer thread now waits for room in the queue
            assert open_log_descriptors(os.getpid(), blobs) > 0
        await wait_for(
            lambda: open_log_descriptors(os.getpid(), blobs) == 0,
            "the export closed its blobs after the client left",
        )
    gc.collect()
    await asyncio.sleep(0.1)
    assert threading.active_count() <= threads + 3  # executor threads, idle, not one per export
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged == []  # no "Future exception was never retrieved: BrokenPipeError"
