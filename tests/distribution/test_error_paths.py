"""Pulls and pushes that fail, as a user meets them through the API: the status, the message, and
a store with nothing unverified or half-written in it.

Real registries (the session fixtures), a fault proxy in front of them, and for answers no real
registry gives (a manifest that is not JSON, a config that does not hash to its digest) a small
aiohttp stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from modelrunner.core.distribution.transfer import TransferOptions
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.core.store import media_types
from modelrunner.server.app import build_app
from tests.distribution import hf_fixtures
from tests.distribution.conftest import RunningRegistry
from tests.distribution.hf_fixtures import FakeHub
from tests.distribution.pull_fixtures import FaultProxy, describe, manifest_for, push_model
from tests.distribution.seeding import seed_model
from tests.distribution.test_huggingface import write_quant_repo
from tests.gguf_factory import write_tiny_gguf

fake_hub = hf_fixtures.fake_hub

CONFIG = b'{"config":{"format":"gguf"},"rootfs":{"type":"rootfs","diff_ids":[]}}'
FAST = TransferOptions(backoff=0.05, backoff_max=0.2, retries=2, stall_timeout=5)
"""Retries that give up within a second."""


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[ModelRunner]:
    root = tmp_path / "runner"
    settings = Settings(
        models_path=root / "models", config_dir=root / "config", cache_dir=root / "cache",
        state_dir=root / "state", seed_default_model=False,
    )  # fmt: skip
    made = ModelRunner(settings)
    made.puller.options = FAST
    await made.start()
    yield made
    await made.stop()


async def create(runner: ModelRunner, reference: str) -> httpx.Response:
    """POST /models/create as DMR's CLI with `Accept: application/json`."""
    transport = httpx.ASGITransport(app=build_app(runner, manage_runner=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://modelrunner.test") as http:
        return await http.post(
            "/models/create", json={"from": reference}, headers={"Accept": "application/json"}
        )


async def push(runner: ModelRunner, reference: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=build_app(runner, manage_runner=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://modelrunner.test") as http:
        return await http.post(f"/models/{reference}/push", headers={"Accept": "application/json"})


def last_line(response: httpx.Response) -> dict[str, object]:
    line: dict[str, object] = json.loads(response.text.splitlines()[-1])
    return line


def assert_nothing_stored(runner: ModelRunner, *, partials: bool = False) -> None:
    """No index entry, manifest or config; a partial blob only where a resume can use it."""
    root = runner.settings.models_path
    assert json.loads((root / "models.json").read_text())["models"] in ([], None)
    assert not list(root.glob("manifests/*/*"))
    blobs = list(root.glob("blobs/*/*"))
    assert [blob for blob in blobs if ".incomplete" not in blob.name] == []
    if not partials:
        assert blobs == []
    assert runner.puller.queue.pending() == []


@dataclass
class FakeRegistry:
    """Answers GETs and HEADs by path prefix with canned (status, content type, body)."""

    answers: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    host: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        for prefix, (status, content_type, body) in self.answers.items():
            if request.path.startswith(prefix):
                headers = {"Content-Type": content_type}
                if request.method == "HEAD":
                    headers["Content-Length"] = str(len(body))
                    return web.Response(status=status, headers=headers)
                return web.Response(status=status, headers=headers, body=body)
        return web.Response(status=404, content_type="application/json",
                            text='{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')  # fmt: skip


@pytest.fixture
async def fake_registry() -> AsyncIterator[FakeRegistry]:
    fake = FakeRegistry()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    served = web.AppRunner(app)
    await served.setup()
    site = web.TCPSite(served, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    fake.host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield fake
    await served.cleanup()


# The reference and the registry


async def test_a_missing_tag_an_unreachable_and_an_unknown_registry(
    registry: RunningRegistry, runner: ModelRunner
) -> None:
    seed_model(registry, "errors/present", "v1")
    missing = await create(runner, f"{registry.host}/errors/present:v2")
    assert missing.status_code == 404
    assert missing.text.strip() == f"model {registry.host}/errors/present:v2 not found"
    unknown = await create(runner, "registry.invalid/errors/x:v1")
    assert unknown.status_code == 502
    assert unknown.text.startswith("cannot reach registry registry.invalid: ")
    assert_nothing_stored(runner)


async def test_a_registry_wanting_credentials_says_how_to_log_in(
    basic_registry: RunningRegistry, runner: ModelRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = basic_registry.host
    seed_model(basic_registry, "errors/locked", "v1")
    anonymous = await create(runner, f"{host}/errors/locked:v1")
    assert anonymous.status_code == 401
    assert anonymous.text.strip() == (  # Docker Hub answers a typo with 401 too, not 404
        f"authentication required for {host} to pull, or the repository does not exist: "
        f"run `modelrunner login {host}`"
    )
    monkeypatch.setenv("DOCKER_USERNAME", "alice")
    monkeypatch.setenv("DOCKER_PASSWORD", "wrong")
    wrong = await create(runner, f"{host}/errors/locked:v1")
    assert wrong.status_code == 401
    assert wrong.text.strip() == (
        f"{host} refused access to pull for alice (from DOCKER_USERNAME): check the username, "
        f"password and permissions, or run `modelrunner login {host}`"
    )
    assert_nothing_stored(runner)


async def test_a_failed_login_keeps_the_credentials_that_work(
    basic_registry: RunningRegistry, runner: ModelRunner
) -> None:
    """A mistyped password at `modelrunner login` must not lock the running server out."""
    host = basic_registry.host
    seed_model(basic_registry, "errors/relogin", "v1")
    await runner.login(host, "alice", "s3cret")
    with pytest.raises(Exception, match="refused access to log in"):
        await runner.login(host, "alice", "typo")
    pulled = await create(runner, f"{host}/errors/relogin:v1")
    assert pulled.status_code == 200
    assert last_line(pulled)["message"] == "Model pulled successfully"


# What the registry serves


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html>Sign in</html>", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (
            b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            b'"config":{"mediaType":"application/vnd.docker.ai.model.config.v0.1+json",'
            b'"digest":"sha256:x","size":1},"layers":[]}',
            "invalid digest 'sha256:x'",
        ),
    ],
    ids=["html", "a-list", "bad-descriptor"],
)
async def test_a_manifest_that_is_not_one_is_the_registrys_fault(
    fake_registry: FakeRegistry, runner: ModelRunner, body: bytes, says: str
) -> None:
    fake_registry.answers["/v2/errors/x/manifests/"] = (200, media_types.OCI_MANIFEST, body)
    response = await create(runner, f"{fake_registry.host}/errors/x:v1")
    assert response.status_code == 502
    assert f"manifest of {fake_registry.host}/errors/x:v1" in response.text
    assert says in response.text
    assert_nothing_stored(runner)


async def test_a_config_that_does_not_match_its_digest_is_refused(
    fake_registry: FakeRegistry, runner: ModelRunner, tmp_path: Path
) -> None:
    weights = write_tiny_gguf(tmp_path / "w.gguf")
    manifest = manifest_for(CONFIG, media_types.CONFIG_V01, [describe(weights, media_types.GGUF)])
    digest = json.loads(manifest)["config"]["digest"]
    fake_registry.answers = {
        "/v2/errors/x/manifests/": (200, media_types.OCI_MANIFEST, manifest),
        f"/v2/errors/x/blobs/{digest}": (200, "application/octet-stream", CONFIG + b" "),
    }
    response = await create(runner, f"{fake_registry.host}/errors/x:v1")
    assert response.status_code == 502
    assert digest in response.text
    assert f"{fake_registry.host}/errors/x:v1" in response.text
    assert_nothing_stored(runner)


async def push_random_layer(
    registry: RunningRegistry,
    tmp_path: Path,
    repository: str,
    served: int,
    declared: int | None = None,
) -> dict[str, object]:
    """Push `repository`:v1 with one GGUF layer of `served` random bytes; its manifest says
    `declared` bytes (default: the truth). Returns the layer's descriptor."""
    blob = tmp_path / f"{repository.replace('/', '-')}.gguf"
    blob.write_bytes(os.urandom(served))
    layer = {**describe(blob, media_types.GGUF), "size": declared or served}
    manifest = manifest_for(CONFIG, media_types.CONFIG_V01, [layer])
    await push_model(registry.url, repository, "v1", manifest, CONFIG, [blob])
    return layer


@pytest.mark.parametrize(("declared", "served"), [(6000, 5000), (4000, 5000)])
async def test_a_blob_of_another_size_than_declared_fails_at_once_and_leaves_nothing(
    registry: RunningRegistry, runner: ModelRunner, tmp_path: Path, declared: int, served: int
) -> None:
    repository = f"errors/size-{declared}"
    layer = await push_random_layer(registry, tmp_path, repository, served, declared)
    proxy = FaultProxy(registry.host)
    await proxy.start()
    try:
        response = await create(runner, f"{proxy.host}/{repository}:v1")
    finally:
        await proxy.close()
    message = str(last_line(response)["message"])
    assert last_line(response)["type"] == "error"
    assert message == (
        f"Error: blob {layer['digest']} of {proxy.host}/{repository}:v1 is {served} bytes "
        f"at the registry, but its manifest says {declared}; nothing was stored"
    )
    assert len(proxy.blob_gets(str(layer["digest"]))) == 1  # no retry of a wrong blob
    assert_nothing_stored(runner)


async def test_a_partial_longer_than_the_registrys_blob_is_dropped_not_resumed(
    registry: RunningRegistry, runner: ModelRunner, tmp_path: Path
) -> None:
    """A partial left by an older pull reaches past the blob's end: the 416 is not the user's
    problem; the partial goes and the blob's real size is reported."""
    layer = await push_random_layer(registry, tmp_path, "errors/long-partial", 5000, 6000)
    blobs = runner.settings.models_path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / f"{str(layer['digest'])[7:]}.incomplete").write_bytes(os.urandom(5500))
    proxy = FaultProxy(registry.host)
    await proxy.start()
    try:
        response = await create(runner, f"{proxy.host}/errors/long-partial:v1")
    finally:
        await proxy.close()
    assert str(last_line(response)["message"]).endswith(
        "is 5000 bytes at the registry, but its manifest says 6000; nothing was stored"
    )
    gets = proxy.blob_gets(str(layer["digest"]))
    assert [(get.start, get.status) for get in gets] == [(5500, 416), (0, 200)]
    assert_nothing_stored(runner)


# The connection


async def test_a_connection_cut_mid_blob_is_resumed(
    registry: RunningRegistry, runner: ModelRunner, tmp_path: Path
) -> None:
    layer = await push_random_layer(registry, tmp_path, "errors/cut", 3 << 20)
    proxy = FaultProxy(registry.host, drop_after=1 << 20)
    await proxy.start()
    try:
        response = await create(runner, f"{proxy.host}/errors/cut:v1")
    finally:
        await proxy.close()
    assert last_line(response)["message"] == "Model pulled successfully"
    gets = proxy.blob_gets(str(layer["digest"]))
    assert [(get.start, get.status) for get in gets] == [(0, 200), (1 << 20, 206)]


async def test_a_registry_gone_for_good_mid_pull_fails_clearly_and_keeps_the_partial(
    registry: RunningRegistry, runner: ModelRunner, tmp_path: Path
) -> None:
    layer = await push_random_layer(registry, tmp_path, "errors/gone", 3 << 20)
    proxy = FaultProxy(registry.host, drop_after=1 << 20)
    await proxy.start()
    runner.puller.options = TransferOptions(backoff=0.5, retries=2)

    async def vanish() -> None:
        await proxy.dropped.wait()
        await proxy.close()  # from now on every connection is refused

    vanishing = asyncio.ensure_future(vanish())
    response = await create(runner, f"{proxy.host}/errors/gone:v1")
    await vanishing
    line = last_line(response)
    assert line["type"] == "error"
    message = str(line["message"])
    assert message.startswith(f"Error: cannot reach registry {proxy.host}: ")
    assert message.endswith(
        "; gave up after 3 attempts. The 1.00 MiB downloaded so far is kept: pull again to resume"
    )
    assert_nothing_stored(runner, partials=True)
    [partial] = runner.settings.models_path.glob("blobs/sha256/*.incomplete")
    assert partial.stat().st_size == 1 << 20

    again = FaultProxy(registry.host)
    await again.start()
    try:
        resumed = await create(runner, f"{again.host}/errors/gone:v1")
    finally:
        await again.close()
    assert last_line(resumed)["message"] == "Model pulled successfully"
    assert [get.start for get in again.blob_gets(str(layer["digest"]))] == [1 << 20]


# Hugging Face


async def test_hugging_face_refusals_through_the_api(
    fake_hub: FakeHub, runner: ModelRunner
) -> None:
    write_quant_repo(fake_hub)
    fake_hub.start()
    missing = await create(runner, "hf.co/acme/nope")
    assert missing.status_code == 404
    assert "hf.co/acme/nope was not found on Hugging Face" in missing.text
    quant = await create(runner, "hf.co/acme/tiny-gguf:Q2_K")
    assert quant.status_code == 404
    assert quant.text.strip() == (
        "hf.co/acme/tiny-gguf has no GGUF file for quantization 'Q2_K'; "
        "available: IQ4_XS, Q4_K_M, Q8_0"
    )
    fake_hub.start(token="s3cret")
    gated = await create(runner, "hf.co/acme/tiny-gguf")
    assert gated.status_code == 401
    assert "set HF_TOKEN" in gated.text
    assert_nothing_stored(runner)


# Push


async def test_pushing_a_model_that_is_not_stored_says_it_is_not_here(
    registry: RunningRegistry, runner: ModelRunner
) -> None:
    response = await push(runner, f"{registry.host}/errors/never:v1")
    assert response.status_code == 404
    assert response.text.strip() == (
        f"no model {registry.host}/errors/never:v1 in the local store to push: "
        "pull, package or tag it first"
    )


@pytest.mark.parametrize("which", ["basic", "token"])
async def test_pushing_without_permission_says_how_to_log_in(
    which: str,
    basic_registry: RunningRegistry,
    token_registry: RunningRegistry,
    runner: ModelRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = basic_registry if which == "basic" else token_registry
    reference = f"{target.host}/errors/pushed:v1"
    await runner.package_model(write_tiny_gguf(tmp_path / "tiny.gguf"), reference)
    anonymous = await push(runner, reference)
    assert anonymous.status_code == 401
    assert anonymous.text.strip() == (
        f"authentication required for {target.host} to push: run `modelrunner login {target.host}`"
    )
    monkeypatch.setenv("DOCKER_USERNAME", "alice")
    monkeypatch.setenv("DOCKER_PASSWORD", "wrong")
    wrong = await push(runner, reference)
    assert wrong.status_code == 401
    assert wrong.text.strip() == (
        f"{target.host} refused access to push for alice (from DOCKER_USERNAME): check the "
        f"username, password and permissions, or run `modelrunner login {target.host}`"
    )
