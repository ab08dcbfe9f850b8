"""Bad input on the API: a 4xx whose message names the problem, never a 500, and nothing changed."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.package import build_gguf_artifact
from modelrunner.core.store.store import StoredModel
from tests.server.conftest import TINY

MESSAGES = [{"role": "user", "content": "hi"}]
TAR = {"content-type": "application/x-tar"}
DEEP = b"[" * 100_000 + b"]" * 100_000
"""JSON nested far deeper than Python's parser recurses."""


def error_message(response: httpx.Response) -> str:
    """The message of an error in any of our formats: the OpenAI envelope, Ollama's
    {"error": "…"} or DMR's plain text."""
    if response.headers.get("content-type", "").startswith("application/json"):
        error = response.json()["error"]
        message: str = error if isinstance(error, str) else error["message"]
        return message
    return response.text


async def stored_tags(client: httpx.AsyncClient) -> list[list[str]]:
    response = await client.get("/models")
    assert response.status_code == 200, response.text
    return [model["tags"] for model in response.json()]


@pytest.mark.parametrize(
    "keep_alive",
    [
        pytest.param("99999999999h", id="centuries"),
        pytest.param("9" * 400 + "h", id="overflows-to-inf"),
        pytest.param("-" + "9" * 400 + "h", id="negative-overflow"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/engines/_configure"])
async def test_a_keep_alive_longer_than_a_go_duration_is_refused(
    client: httpx.AsyncClient, tiny_model: StoredModel, path: str, keep_alive: str
) -> None:
    """It used to be stored as inf (or centuries), and /engines/ps then answered 500."""
    body = {"model": TINY, "messages": MESSAGES, "keep_alive": keep_alive}
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert "keep_alive" in error_message(response)
    assert "out of range" in error_message(response)
    assert (await client.get("/engines/_configure")).json() == []
    assert (await client.get("/engines/ps")).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"models": {}}, "models"),
        ({"models": ""}, "models"),
        ({"models": 0}, "models"),
        ({"models": False}, "models"),
        ({"backend": 0, "models": [TINY]}, "backend"),
        ({"backend": False, "models": [TINY]}, "backend"),
        ({"backend": [], "models": [TINY]}, "backend"),
    ],
)
async def test_unload_refuses_fields_of_the_wrong_type(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    """A falsy value of the wrong type used to pass as "nothing given" (200, 0 unloaded)."""
    response = await client.post("/engines/unload", json=body)
    assert response.status_code == 400, response.text
    assert f'"{field}" must be' in error_message(response)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("repo=ai/copy:v1", "repo"),
        ("repo=ai/copy@sha256:" + "a" * 64, "repo"),
        ("repo=localhost:5000/ai/copy:v1", "repo"),
        ("repo=ai/copy&tag=v1:v2", "tag"),
        ("repo=ai/copy&tag=v1@sha256:" + "a" * 64, "tag"),
    ],
)
async def test_tag_says_which_parameter_holds_a_tag_or_digest(
    client: httpx.AsyncClient, tiny_model: StoredModel, query: str, named: str
) -> None:
    """It used to blame a name component ("'copy:v1' is not a valid name component")."""
    response = await client.post(f"/models/{TINY}/tag?{query}")
    assert response.status_code == 400, response.text
    assert error_message(response).startswith(f"invalid {named} ")
    assert await stored_tags(client) == [["docker.io/ai/tiny:latest"]]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"speculative": {"draft_model": TINY, "num_tokens": 2**31}}, "speculative.num_tokens"),
        ({"speculative": {"draft_model": TINY, "num_tokens": 1e30}}, "speculative.num_tokens"),
        ({"llamacpp": {"reasoning-budget": 2**31}}, "llamacpp.reasoning-budget"),
        ({"llamacpp": {"reasoning-budget": 1e30}}, "llamacpp.reasoning-budget"),
    ],
)
async def test_configure_refuses_numbers_llama_server_cannot_read(
    client: httpx.AsyncClient, tiny_model: StoredModel, extra: dict[str, Any], field: str
) -> None:
    """They were stored (202), and every later request to the model failed to start it."""
    response = await client.post("/engines/_configure", json={"model": TINY, **extra})
    assert response.status_code == 400, response.text
    assert field in error_message(response)
    assert (await client.get("/engines/_configure")).json() == []


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tarball(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _archive_with_config(config: bytes, manifest_bytes: bytes | None = None) -> bytes:
    layer = b"GGUF" + bytes(60)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
            "digest": _sha256(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.ai.gguf.v3",
                "digest": _sha256(layer),
                "size": len(layer),
            }
        ],
    }
    return _tarball(
        {
            f"blobs/sha256/{_sha256(layer)[7:]}": layer,
            f"blobs/sha256/{_sha256(config)[7:]}": config,
            "manifest.json": manifest_bytes or json.dumps(manifest).encode(),
        }
    )


@pytest.mark.parametrize("config", [b"[]", b'"config"', b"{bad", b"\xff"])
async def test_load_refuses_a_model_whose_config_is_not_a_json_object(
    client: httpx.AsyncClient, runner: ModelRunner, config: bytes
) -> None:
    """A config that is a JSON array was stored, and GET /models answered 500 from then on."""
    response = await client.post("/models/load", content=_archive_with_config(config), headers=TAR)
    assert response.status_code == 400, response.text
    assert "config" in error_message(response)
    assert "JSON object" in error_message(response)
    assert await stored_tags(client) == []
    assert not runner.store.layout.blob_path(_sha256(config)).exists()


@pytest.mark.parametrize("config", [pytest.param(b"[]", id="array"), pytest.param(DEEP, id="deep")])
async def test_a_stored_config_that_is_not_an_object_lists_as_empty(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_gguf: Path, config: bytes
) -> None:
    """A store written by another tool may hold one: the model lists with an empty config."""
    artifact = build_gguf_artifact(tiny_gguf)
    manifest = json.loads(artifact.manifest_bytes)
    manifest["config"].update(digest=_sha256(config), size=len(config))
    damaged = dataclasses.replace(
        artifact, manifest_bytes=json.dumps(manifest).encode(), config_bytes=config
    )
    runner.store.write(damaged, ["ai/damaged:latest"])
    for path in ("/models", "/v1/models", "/models/ai/damaged", "/engines/df"):
        response = await client.get(path)
        assert response.status_code == 200, f"{path}: {response.text}"
    assert (await client.get("/models/ai/damaged")).json()["config"] == {}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions", "/rerank", "/engines/_configure", "/engines/unload",
        "/models/create", "/api/chat",
    ],
)  # fmt: skip
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(DEEP, id="deep-array"),
        pytest.param(b'{"model": "ai/tiny", "messages": ' + DEEP + b"}", id="deep-field"),
    ],
)
async def test_json_nested_too_deeply_is_a_400(
    client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    """json.loads raises RecursionError, which was not caught: a 500."""
    response = await client.post(path, content=body)
    assert response.status_code == 400, response.text
    assert "nested too deeply" in error_message(response)


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(lambda: _archive_with_config(b"{}", manifest_bytes=DEEP), id="manifest"),
        pytest.param(lambda: _archive_with_config(DEEP), id="config"),
    ],
)
async def test_load_refuses_json_nested_too_deeply(
    client: httpx.AsyncClient, archive: Callable[[], bytes]
) -> None:
    response = await client.post("/models/load", content=archive(), headers=TAR)
    assert response.status_code == 400, response.text
    assert "nested too deeply" in error_message(response)
    assert await stored_tags(client) == []


@pytest.mark.parametrize("path", ["/models/create", "/engines/_configure"])
async def test_every_json_body_is_held_to_the_size_limit(
    client: httpx.AsyncClient, path: str
) -> None:
    """/models/create (and push) read any body whole before; now 10 MiB at most, as inference."""
    response = await client.post(path, content=b'{"from": "' + b"x" * (11 << 20) + b'"}')
    assert response.status_code == 413, response.text
    assert "at most 10485760 bytes" in error_message(response)


@pytest.mark.parametrize("path", ["/models/create", "/engines/_configure", "/api/chat"])
async def test_nan_is_not_json_anywhere(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path, content=b'{"from": NaN, "model": NaN}')
    assert response.status_code == 400, response.text
    assert "NaN is not a JSON number" in error_message(response)
