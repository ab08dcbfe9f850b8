"""DELETE /models/purge: DMR's store reset, with running models stopped first."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import StoredModel
from tests.server.conftest import TINY


@pytest.mark.llama
async def test_purge_stops_running_models_and_empties_the_store(
    llama_server: Path,
    client: httpx.AsyncClient,
    runner: ModelRunner,
    tiny_model: StoredModel,
    other_gguf_model: StoredModel,
) -> None:
    body = {"model": TINY, "prompt": "abc", "max_tokens": 2, "temperature": 0}
    assert (await client.post("/v1/completions", json=body)).status_code == 200
    (running,) = runner.running()
    pid = running.pid
    assert pid is not None

    response = await client.delete("/models/purge")

    assert response.status_code == 200
    assert response.content == b""
    assert runner.running() == []
    assert not psutil.pid_exists(pid)  # the llama-server was stopped and reaped
    assert (await client.get("/models")).json() == []
    root = runner.settings.models_path
    assert sorted(path.name for path in root.iterdir()) == [".lock", "layout.json", "models.json"]
    assert (root / "models.json").read_text() == '{\n  "models": []\n}'
    assert (await client.get(f"/models/{TINY}")).status_code == 404


async def test_the_store_works_after_a_purge(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel, tiny_gguf: Path
) -> None:
    assert (await client.delete("/models/purge")).status_code == 200
    again = await runner.package_model(tiny_gguf, TINY)
    assert [model["id"] for model in (await client.get("/models")).json()] == [again.id]
    assert (await client.get(f"/models/{TINY}")).json()["id"] == again.id


async def test_purge_of_an_empty_store_is_fine(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/models/purge")).status_code == 200
    assert (await client.get("/models")).json() == []


async def test_purge_refuses_a_directory_that_is_not_a_store(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    root = runner.settings.models_path
    (root / "layout.json").unlink()
    (root / "notes.txt").write_text("not a model")
    response = await client.delete("/models/purge")
    assert response.status_code == 500
    assert response.text == (
        f"error while purging models: refusing to reset: directory {str(root)!r} does not "
        "appear to be a model store (missing layout.json)\n"
    )
    assert (root / "notes.txt").read_text() == "not a model"
    assert runner.store.layout.manifest_path(tiny_model.id).is_file()


async def test_get_and_other_methods_on_purge_still_mean_a_model_named_purge(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.get("/models/purge")
    assert response.status_code == 404
    assert "purge" in response.text
    assert [model["id"] for model in (await client.get("/models")).json()] == [tiny_model.id]


async def test_purge_refuses_a_store_root_that_holds_other_files(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    # MODELS_PATH=~ by mistake: the store wrote its layout.json beside the user's own files.
    root = runner.settings.models_path
    (root / "notes.txt").write_text("precious")
    (root / "Documents").mkdir()
    (root / "Documents" / "thesis.md").write_text("chapter 1")
    response = await client.delete("/models/purge")
    assert response.status_code == 500
    assert response.text == (
        f"error while purging models: refusing to reset: directory {str(root)!r} holds files "
        "that are not the model store's (Documents, notes.txt)\n"
    )
    assert (root / "notes.txt").read_text() == "precious"
    assert (root / "Documents" / "thesis.md").read_text() == "chapter 1"
    assert runner.store.layout.manifest_path(tiny_model.id).is_file()
    assert [model["id"] for model in (await client.get("/models")).json()] == [tiny_model.id]


async def test_purge_removes_a_symlink_in_the_store_not_what_it_points_to(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    blobs = runner.store.layout.blobs_dir / "sha256"
    (blobs / "link-to-outside").symlink_to(outside)
    assert (await client.delete("/models/purge")).status_code == 200
    assert (outside / "keep.txt").read_text() == "keep"
    assert not (blobs / "link-to-outside").exists()
