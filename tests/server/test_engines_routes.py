"""DMR's engine routes on real llama-servers: status, ps, unload, _configure, /metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.server.app import build_app
from tests.inference.engine_fakes import wait_until
from tests.server.conftest import BASE_URL

pytestmark = pytest.mark.llama

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}


@dataclass(frozen=True)
class BusyInfo:
    """A runner serving a request, as the pool reports it."""

    model_id: str
    reference: str = "ai/tiny"
    state: str = "busy"
    last_used: float = 0.0
    in_use: int = 1
    loading: bool = False
    keep_alive: float | None = 300.0
    mode: str = "completion"


@pytest.fixture
async def engine(settings: Settings, tiny_gguf: Path) -> AsyncIterator[ModelRunner]:
    """A started runner with two tiny models: ai/tiny and ai/tiny2 (different IDs)."""
    runner = ModelRunner(settings)
    await runner.start()
    await runner.package_model(tiny_gguf, "ai/tiny:latest", context_size=256)
    await runner.package_model(tiny_gguf, "ai/tiny2:latest", context_size=384)
    try:
        yield runner
    finally:
        await runner.stop()


@pytest.fixture
async def api(engine: ModelRunner) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(engine, manage_runner=False))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


async def chat(api: httpx.AsyncClient, model: str) -> None:
    response = await api.post("/engines/v1/chat/completions", json={**CHAT, "model": model})
    assert response.status_code == 200, response.text


def assert_plain_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/plain"), response.text
    assert words in response.text


async def test_status(api: httpx.AsyncClient) -> None:
    response = await api.get("/engines/status")
    assert response.status_code == 200
    assert response.json()["llama.cpp"].startswith("Running: llama.cpp ")


async def test_ps_lists_runners_in_dmr_shape_and_unload_stops_them(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.get("/engines/ps")).json() == []
    await chat(api, "ai/tiny")
    [entry] = (await api.get("/engines/ps")).json()
    assert entry["backend_name"] == "llama.cpp"
    assert entry["model_name"] == "ai/tiny:latest"
    assert entry["mode"] == "completion"
    assert entry["last_used"].endswith("Z")
    assert not entry["last_used"].startswith("0001")
    assert "in_use" not in entry
    assert "loading" not in entry
    response = await api.post("/engines/unload", json={"models": ["ai/tiny"]})
    assert response.json() == {"unloaded_runners": 1}
    assert (await api.get("/engines/ps")).json() == []
    await chat(api, "ai/tiny")
    await chat(api, "ai/tiny2")
    response = await api.post("/engines/unload", json={"all": True, "backend": "", "models": []})
    assert response.json() == {"unloaded_runners": 2}


async def test_chat_and_embeddings_run_two_runners_under_one_name(
    api: httpx.AsyncClient,
) -> None:
    """No _configure: the path picks the mode; ps and metrics name the model one way."""
    await chat(api, "tiny")
    embedded = await api.post("/v1/embeddings", json={"model": "ai/tiny:latest", "input": "abc"})
    assert embedded.status_code == 200, embedded.text
    [item] = embedded.json()["data"]
    assert len(item["embedding"]) == 64  # the tiny model's embedding length
    entries = (await api.get("/engines/ps")).json()
    assert sorted((e["model_name"], e["mode"]) for e in entries) == [
        ("ai/tiny:latest", "completion"), ("ai/tiny:latest", "embedding")]  # fmt: skip
    metrics = await api.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    labels = {
        (s.labels["model"], s.labels["mode"]) for s in families["llamacpp:prompt_tokens"].samples
    }
    assert labels == {("ai/tiny:latest", "completion"), ("ai/tiny:latest", "embedding")}
    requests = {
        (s.labels["model"], s.labels["mode"]) for s in families["modelrunner_requests"].samples
    }
    assert requests == labels  # "tiny" and "ai/tiny:latest" are one model
    response = await api.post("/engines/unload", json={"models": ["ai/tiny"]})
    assert response.json() == {"unloaded_runners": 2}  # every mode, as DMR


async def test_unload_errors_are_plain_text(api: httpx.AsyncClient) -> None:
    assert_plain_error(await api.post("/engines/unload", content=b"{"), 400, "invalid request")
    response = await api.post("/engines/unload", json={"backend": "vllm", "models": ["ai/tiny"]})
    assert_plain_error(response, 404, "backend not found")
    response = await api.post("/engines/unload", json={"all": "yes"})
    assert_plain_error(response, 400, '"all" must be true or false')
    # as DMR: a model that is not stored has nothing loaded, so nothing is unloaded
    response = await api.post("/engines/unload", json={"models": ["ai/missing"]})
    assert response.status_code == 200
    assert response.json() == {"unloaded_runners": 0}


async def test_configure_validation(api: httpx.AsyncClient) -> None:
    bad_flag = {"model": "ai/tiny", "runtime-flags": ["--log-file", "x"]}
    assert_plain_error(await api.post("/engines/_configure", json=bad_flag), 400, "'--log-file'")
    with_path = {"model": "ai/tiny", "raw-runtime-flags": "--grammar ../x"}
    assert_plain_error(await api.post("/engines/_configure", json=with_path), 400, "paths")
    bad_mode = {"model": "ai/tiny", "mode": "chat"}
    assert_plain_error(await api.post("/engines/_configure", json=bad_mode), 400, "mode")
    bad_json = await api.post("/engines/llama.cpp/_configure", content=b"[")
    assert_plain_error(bad_json, 400, "not valid JSON")
    missing = await api.post("/engines/_configure", json={"model": "ai/missing"})
    assert_plain_error(missing, 404, "not found")
    unknown = await api.post("/engines/vllm/_configure", json={"model": "ai/tiny"})
    assert_plain_error(unknown, 404, "backend not found")


async def test_preload_only_loads_the_model_and_asks_it_nothing(
    api: httpx.AsyncClient, engine: ModelRunner
) -> None:
    """DMR's X-Preload-Only (sent by `docker model run` before the first prompt): 200, no body,
    the runner ready; an empty message list would have been a 400 from llama-server."""
    body = {"model": "ai/tiny", "messages": []}
    response = await api.post(
        "/engines/v1/chat/completions", json=body, headers={"X-Preload-Only": "true"}
    )
    assert (response.status_code, response.content) == (200, b"")
    [runner] = engine.running()
    assert runner.mode == "completion"
    assert runner.state in ("ready", "idle")  # loaded, serving nobody
    embeddings = await api.post(
        "/engines/v1/embeddings", json={"model": "ai/tiny"}, headers={"X-Preload-Only": "true"}
    )
    assert embeddings.status_code == 200
    assert sorted(info.mode for info in engine.running()) == ["completion", "embedding"]
    missing = await api.post(
        "/engines/v1/chat/completions", json={"model": "ai/missing"},
        headers={"X-Preload-Only": "true"},
    )  # fmt: skip
    assert missing.status_code == 404


async def test_configure_refuses_flag_values_llama_server_refuses(
    api: httpx.AsyncClient, llama_server: Path
) -> None:
    """Stored, `--threads x` would fail every load of the model: it is refused up front."""
    bad_value = {"model": "ai/tiny", "runtime-flags": ["--threads", "x"]}
    response = await api.post("/engines/_configure", json=bad_value)
    assert_plain_error(response, 400, "llama-server refused --threads: expects a number")
    raw = {"model": "ai/tiny", "raw-runtime-flags": "--flash-attn maybe"}
    response = await api.post("/engines/_configure", json=raw)
    assert_plain_error(response, 400, "unknown value for --flash-attn: 'maybe'")
    assert (await api.get("/engines/_configure", params={"model": "ai/tiny"})).json() == []


async def test_configure_is_honoured_by_the_next_load(
    api: httpx.AsyncClient, engine: ModelRunner
) -> None:
    await chat(api, "ai/tiny")
    [before] = engine.running()
    body = {"model": "ai/tiny", "context-size": 512, "runtime-flags": ["--threads", "1"],
            "keep_alive": "10m"}  # fmt: skip
    response = await api.post("/engines/llama.cpp/_configure", json=body)
    assert response.status_code == 202
    assert response.content == b""
    # The idle runner stopped; the preload starts it again with the config.
    await wait_until(lambda: [i.state for i in engine.running()] == ["ready"])
    assert engine.running()[0].pid != before.pid
    [entry] = (await api.get("/engines/_configure", params={"model": "ai/tiny"})).json()
    assert entry["Model"] == "ai/tiny"
    assert entry["Mode"] == "completion"
    assert entry["Config"] == {"context-size": 512, "runtime-flags": ["--threads", "1"],
                               "keep_alive": "10m0s"}  # fmt: skip
    await chat(api, "ai/tiny")
    model = await engine.get_model("ai/tiny")
    runner = engine.pool.get(model.id)
    assert runner is not None
    assert runner.argv[runner.argv.index("--ctx-size") :][:4] == [
        "--ctx-size", "512", "--threads", "1"]  # fmt: skip
    props = await engine.pool.upstream.request(runner, "GET", "/props")
    try:
        assert json.loads(await props.read())["default_generation_settings"]["n_ctx"] == 512
    finally:
        await props.aclose()
    # Unloading all forgets stored configs, as DMR's `all`.
    await api.post("/engines/unload", json={"all": True})
    assert (await api.get("/engines/_configure")).json() == []


async def test_configure_refuses_a_busy_runner(
    api: httpx.AsyncClient, engine: ModelRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = await engine.get_model("ai/tiny")
    busy = BusyInfo(model.id)
    monkeypatch.setattr(engine.pool, "running", lambda: [busy])
    response = await api.post("/engines/_configure", json={"model": "ai/tiny", "context-size": 512})
    assert_plain_error(response, 409, "runner already active")
    [entry] = (await api.get("/engines/ps")).json()
    assert entry["in_use"] is True
    assert entry["last_used"] == "0001-01-01T00:00:00Z"
    assert entry["keep_alive"] == "5m0s"
    assert "loading" not in entry


async def test_metrics_carry_per_model_series_for_two_models(api: httpx.AsyncClient) -> None:
    await chat(api, "ai/tiny")
    await chat(api, "ai/tiny2")
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    prompt_tokens = families["llamacpp:prompt_tokens"]
    assert prompt_tokens.type == "counter"
    assert {s.labels["model"] for s in prompt_tokens.samples} == {
        "ai/tiny:latest",
        "ai/tiny2:latest",
    }
    runners = {s.labels["state"]: s.value for s in families["modelrunner_runners"].samples}
    assert sum(runners.values()) == 2
    assert set(runners) <= {"ready", "idle"}
    assert response.text.count("# TYPE llamacpp:prompt_tokens_total ") == 1


async def test_metrics_without_llama_metrics_are_ours_only(
    settings: Settings, tiny_gguf: Path
) -> None:
    runner = ModelRunner(settings.with_changes(llama_args=("-ngl", "0")))
    await runner.start()
    try:
        await runner.package_model(tiny_gguf, "ai/tiny:latest")
        transport = httpx.ASGITransport(app=build_app(runner, manage_runner=False))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            await chat(http, "ai/tiny")
            response = await http.get("/metrics")
    finally:
        await runner.stop()
    assert response.status_code == 200
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert "modelrunner_runners" in families
    assert not any(name.startswith("llamacpp:") for name in families)


async def test_disable_metrics_removes_the_route(settings: Settings) -> None:
    runner = ModelRunner(settings.with_changes(disable_metrics=True))
    transport = httpx.ASGITransport(app=build_app(runner, manage_runner=False))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        response = await http.get("/metrics")
    assert response.status_code == 404
