"""DMR's /models routes, the root and /version, through the ASGI app on a real store."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.archive import write_archive
from modelrunner.core.store.package import build_gguf_artifact
from modelrunner.core.store.store import StoredModel
from tests.server.conftest import TINY


async def test_root_says_it_is_running(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.text == "Docker Model Runner is running"


async def test_version_is_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/version")
    assert response.status_code == 200
    assert isinstance(response.json()["version"], str)


async def test_empty_store_lists_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/models")
    assert response.status_code == 200
    assert response.json() == []


async def test_lists_models_in_dmr_shape(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.get("/models")
    assert response.status_code == 200
    [model] = response.json()
    assert set(model) == {"id", "tags", "created", "config"}
    assert model["id"] == tiny_model.id
    assert model["tags"] == ["docker.io/ai/tiny:latest"]
    assert model["config"]["format"] == "gguf"
    assert model["config"]["architecture"] == "llama"


@pytest.mark.parametrize(
    "name", ["ai/tiny", "ai/tiny:latest", "tiny", "docker.io/ai/tiny:latest", "TINY_ID", "SHORT_ID"]
)
async def test_gets_one_model_by_any_spelling(
    client: httpx.AsyncClient, tiny_model: StoredModel, name: str
) -> None:
    name = {"TINY_ID": tiny_model.id, "SHORT_ID": tiny_model.id[7:19]}.get(name, name)
    response = await client.get(f"/models/{name}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == tiny_model.id


async def test_partial_name_falls_back_to_the_repository(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    await runner.tag_model(TINY, "myorg/other:v2")
    response = await client.get("/models/other")  # ai/other:latest is not stored
    assert response.status_code == 200
    assert response.json()["id"] == tiny_model.id


async def test_unknown_model_is_plain_text_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/models/ai/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert "not found" in response.text


async def test_malformed_name_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/models/Bad Name")
    assert response.status_code == 400
    assert "invalid model reference" in response.text


async def test_malformed_digest_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/models/ai/tiny@sha256:xyz")
    assert response.status_code == 400
    assert "digest" in response.text


async def test_tag_answers_201_with_the_target(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.post(f"/models/{TINY}/tag", params={"repo": "myorg/tiny", "tag": "v1"})
    assert response.status_code == 201
    assert response.json() == {
        "message": 'Model tagged successfully with "myorg/tiny:v1"',
        "target": "myorg/tiny:v1",
    }
    tags = (await client.get("/models/myorg/tiny:v1")).json()["tags"]
    assert "docker.io/myorg/tiny:v1" in tags


async def test_tag_by_id_defaults_to_latest(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.post(f"/models/{tiny_model.id}/tag", params={"repo": "ai/copy"})
    assert response.status_code == 201
    assert response.json()["target"] == "ai/copy:latest"


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({}, 400, "missing repo"),
        ({"repo": "Upper/Case"}, 400, "lower-case"),
        ({"repo": "ai/x", "tag": "-bad"}, 400, "tag"),
    ],
)
async def test_tag_refuses_bad_targets(
    client: httpx.AsyncClient,
    tiny_model: StoredModel,
    params: dict[str, str],
    status: int,
    words: str,
) -> None:
    response = await client.post(f"/models/{TINY}/tag", params=params)
    assert response.status_code == status
    assert words in response.text


async def test_tag_of_unknown_source_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/models/ai/ghost/tag", params={"repo": "ai/x"})
    assert response.status_code == 404


async def test_unknown_model_action_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/models/{TINY}/frobnicate")
    assert response.status_code == 404
    assert "unknown action 'frobnicate'" in response.text


async def test_delete_untags_then_deletes(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    await runner.tag_model(TINY, "ai/tiny:v2")
    response = await client.delete("/models/ai/tiny:v2")
    assert response.status_code == 200
    assert response.json() == [{"Untagged": "docker.io/ai/tiny:v2"}]
    response = await client.delete("/models/ai/tiny")
    assert response.status_code == 200
    assert {"Deleted": tiny_model.id} in response.json()
    assert (await client.get("/models")).json() == []


async def test_delete_of_an_id_with_two_tags_needs_force(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    await runner.tag_model(TINY, "ai/tiny:v2")
    response = await client.delete(f"/models/{tiny_model.id}")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("text/plain")
    response = await client.delete(f"/models/{tiny_model.id}", params={"force": "true"})
    assert response.status_code == 200
    assert {"Deleted": tiny_model.id} in response.json()


async def test_delete_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/models/ai/ghost")
    assert response.status_code == 404


async def test_delete_with_a_bad_force_value_is_400(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    response = await client.delete(f"/models/{TINY}", params={"force": "maybe"})
    assert response.status_code == 400
    assert "force" in response.text


async def test_wrong_method_is_405_with_a_message(client: httpx.AsyncClient) -> None:
    response = await client.put("/models")
    assert response.status_code == 405
    assert "PUT" in response.text
    assert "GET" in response.headers["allow"]


async def test_unknown_path_is_plain_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.text == "no route for GET /nope\n"


async def test_unexpected_errors_are_short_500s(
    client: httpx.AsyncClient, runner: ModelRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> list[StoredModel]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runner, "list_models", broken)
    response = await client.get("/models")
    assert response.status_code == 500
    assert response.text == "internal error: RuntimeError\n"
    response = await client.get("/v1/models")
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "internal error: RuntimeError"
    assert "Traceback" not in response.text


def _archive(gguf: Path) -> tuple[str, bytes]:
    artifact = build_gguf_artifact(gguf)
    buffer = io.BytesIO()
    write_archive(artifact, buffer)
    return artifact.id, buffer.getvalue()


async def test_load_stores_an_export_tarball_untagged(
    client: httpx.AsyncClient, tiny_gguf: Path
) -> None:
    model_id, tarball = _archive(tiny_gguf)
    headers = {"content-type": "application/x-tar"}
    response = await client.post("/models/load", content=tarball, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == model_id
    [model] = (await client.get("/models")).json()
    assert model["id"] == model_id
    assert model["tags"] == []
    response = await client.post(f"/models/{model_id}/tag", params={"repo": "ai/loaded"})
    assert response.status_code == 201
    assert (await client.get("/models/loaded")).json()["id"] == model_id


async def test_load_refuses_what_is_not_a_tarball(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/x-tar"}
    response = await client.post("/models/load", content=b"not a tar", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    response = await client.post("/models/load", json={"a": 1})
    assert response.status_code == 415
