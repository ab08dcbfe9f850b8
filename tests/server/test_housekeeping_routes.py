"""Housekeeping routes through the ASGI app: df, prune, fsck and updates on a real store."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx
import pytest

from modelrunner.core.references import ModelReference
from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.housekeeping import disk_usage
from modelrunner.core.store.package import index_files, parse_manifest
from modelrunner.core.store.store import StoredModel


def _plant_loose_blob(runner: ModelRunner, size: int = 321) -> str:
    path = runner.store.layout.blobs_dir / "sha256" / ("d" * 64)
    path.write_bytes(os.urandom(size))
    old = time.time() - 3600
    os.utime(path, (old, old))
    return str(path.relative_to(runner.store.root))


async def test_df_answers_dmrs_keys_counting_each_file_once(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    runner.store.bundle(tiny_model.id)

    answer = await client.get("/engines/df")

    assert answer.status_code == 200
    body = answer.json()
    assert list(body)[:2] == ["models_disk_usage", "default_backend_disk_usage"]
    assert body["models_disk_usage"] == disk_usage(runner.store).total
    assert body["apparent_disk_usage"] > body["models_disk_usage"]  # the bundle's hard link
    assert [model["id"] for model in body["models"]] == [tiny_model.id]


async def test_prune_preview_then_prune(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    planted = _plant_loose_blob(runner)

    preview = await client.post("/models/prune", params={"dry_run": "true"})

    assert preview.status_code == 200
    assert preview.json()["dry_run"] is True
    assert [item["path"] for item in preview.json()["items"]] == [planted]
    assert (runner.store.root / planted).exists()

    done = await client.post("/models/prune", params={"dry_run": "false", "all_partials": "true"})

    assert done.json()["items"] == preview.json()["items"]
    assert done.json()["freed"] == preview.json()["freed"] == 321
    assert not (runner.store.root / planted).exists()
    assert (await client.get("/models/ai/tiny")).status_code == 200


async def test_prune_refuses_a_bad_flag_in_plain_text(client: httpx.AsyncClient) -> None:
    answer = await client.post("/models/prune", params={"dry_run": "maybe"})

    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/plain")
    assert "dry_run" in answer.text


async def test_fsck_reports_then_repairs_a_corrupt_blob(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    assert (await client.post("/models/fsck")).json()["ok"] is True
    config = index_files(parse_manifest(runner.store.manifest_bytes(tiny_model.id)))[-1]
    runner.store.blob_path(config).write_bytes(b"{}")

    found = (await client.post("/models/fsck")).json()

    assert [(p["kind"], p["subject"]) for p in found["problems"]] == [("corrupt_blob", config)]
    assert runner.store.blob_path(config).exists()

    repaired = (await client.post("/models/fsck", params={"repair": "true"})).json()

    assert repaired["problems"][0]["repaired"]
    assert not runner.store.blob_path(config).exists()


@dataclass(frozen=True)
class _Answer:
    digest: str
    index_digest: str | None = None


async def test_updates_lists_registry_tags_only(
    client: httpx.AsyncClient,
    runner: ModelRunner,
    tiny_model: StoredModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await runner.tag_model(tiny_model.id, "ai/tiny:v2")
    await runner.tag_model(tiny_model.id, "hf.co/org/tiny:Q4_K_M")
    newer = "sha256:" + "e" * 64
    remote = {"ai/tiny:latest": tiny_model.id, "ai/tiny:v2": newer}

    async def get_manifest(ref: ModelReference) -> _Answer:
        # The real registry client is exercised in tests/distribution/test_updates.py.
        return _Answer(remote[ref.normalized])

    monkeypatch.setattr(runner.registry, "get_manifest", get_manifest)

    answer = await client.get("/models/updates")

    assert answer.status_code == 200
    assert answer.json() == [
        {"tag": "ai/tiny:latest", "model_id": tiny_model.id, "status": "up to date",
         "remote_digest": tiny_model.id},
        {"tag": "ai/tiny:v2", "model_id": tiny_model.id, "status": "update available",
         "remote_digest": newer},
    ]  # fmt: skip
