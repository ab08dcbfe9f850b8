"""_configure: request parsing, keep_alive, stored configs, and llama-server's command line."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelrunner.core.errors import Conflict, InvalidInput, ModelNotFound
from modelrunner.core.inference.configure import (
    FOREVER,
    RunnerConfig,
    RunnerConfigs,
    Speculative,
    apply_configure,
    format_keep_alive,
    parse_configure_request,
    parse_keep_alive,
)
from modelrunner.core.inference.llama_server import LlamaServer, build_argv
from modelrunner.core.inference.upstream import UpstreamClient
from tests.inference.engine_fakes import FakeBundle

SOCKET = Path("/run/mr/llama.sock")


def test_dmr_mixed_key_styles_parse() -> None:
    request = parse_configure_request({
        "model": "ai/smollm2", "context-size": 8192, "runtime-flags": ["--threads", "4"],
        "raw-runtime-flags": "--threads 8",
        "speculative": {"draft_model": "ai/tiny", "num_tokens": 5, "min_acceptance_rate": 0.8},
        "keep_alive": "10m", "llamacpp": {"reasoning-budget": -1},
    })  # fmt: skip
    assert request.model == "ai/smollm2"
    assert request.mode == "completion"
    assert request.config == RunnerConfig(
        context_size=8192, runtime_flags=("--threads", "4"), reasoning_budget=-1,
        speculative=Speculative("ai/tiny", 5, 0.8), keep_alive=600.0,
    )  # fmt: skip
    assert request.config.to_api() == {
        "context-size": 8192, "runtime-flags": ["--threads", "4"],
        "speculative": {"draft_model": "ai/tiny", "num_tokens": 5, "min_acceptance_rate": 0.8},
        "keep_alive": "10m0s", "llamacpp": {"reasoning-budget": -1},
    }  # fmt: skip


def test_raw_flags_are_used_when_there_is_no_list_and_embeddings_set_the_mode() -> None:
    request = parse_configure_request({"model": "m", "raw-runtime-flags": "--embeddings -t 2"})
    assert request.config.runtime_flags == ("--embeddings", "-t", "2")
    assert request.mode == "embedding"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "model is required"),
        ([], "must be a JSON object"),
        ({"model": "m", "mode": "chat"}, "invalid mode 'chat'"),
        ({"model": "m", "mode": "image-generation"}, "does not support"),
        ({"model": "m", "context-size": "big"}, "context-size must be a whole number"),
        ({"model": "m", "context-size": -2}, "context-size must be between 1 and"),
        ({"model": "m", "context-size": 2**40}, "context-size must be between 1 and"),
        ({"model": "m", "context-size": float("inf")}, "context-size must be a whole number"),
        ({"model": "m", "runtime-flags": ["--log-file", "x"]}, "'--log-file' is not allowed"),
        ({"model": "m", "runtime-flags": "--threads 4"}, "must be a list"),
        ({"model": "m", "raw-runtime-flags": "--grammar /etc/x"}, "paths are not allowed"),
        ({"model": "m", "keep_alive": 300}, "keep_alive must be a string"),
        ({"model": "m", "keep_alive": "soon"}, "invalid keep_alive"),
        ({"model": "m", "speculative": {"num_tokens": 3}}, "draft_model must name"),
        ({"model": "m", "speculative": {"draft_model": "d", "min_acceptance_rate": 2}}, "between"),
        ({"model": "m", "llamacpp": {"reasoning-budget": -5}}, "reasoning-budget"),
    ],
)
def test_validation_errors_are_invalid_input(body: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as error:
        parse_configure_request(body)
    assert error.value.status == 400


@pytest.mark.parametrize(
    ("text", "seconds", "shown"),
    [("0", 0.0, "0s"), ("-1", FOREVER, "-1"), ("-1m", FOREVER, "-1"), ("5m", 300.0, "5m0s"),
     ("1h", 3600.0, "1h0m0s"), ("30s", 30.0, "30s"), ("24h", 86400.0, "24h0m0s"),
     ("1h30m", 5400.0, "1h30m0s"), ("500ms", 0.5, "500ms"), ("1.5s", 1.5, "1.5s")],
)  # fmt: skip
def test_keep_alive_durations(text: str, seconds: float, shown: str) -> None:
    assert parse_keep_alive(text) == seconds
    assert format_keep_alive(parse_keep_alive(text)) == shown


@pytest.mark.parametrize("text", ["", "abc", "5", "5x", "m5"])
def test_bad_keep_alive(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_keep_alive(text)


def test_argv_order_with_a_config() -> None:
    bundle = FakeBundle(Path("/b"), Path("/b/model/m.gguf"), chat_template=Path("/b/model/t.jinja"),
                        config={"context_size": 2048})  # fmt: skip
    draft = FakeBundle(Path("/d"), Path("/d/model/d.gguf"))
    config = RunnerConfig(
        context_size=8192, runtime_flags=("--threads", "2"), reasoning_budget=0,
        speculative=Speculative("ai/d", 5, 0.8),
    )  # fmt: skip
    argv = build_argv(Path("/bin/llama-server"), bundle, SOCKET, config=config, draft=draft)
    assert argv == [
        "/bin/llama-server", "-ngl", "999", "--metrics", "--model", "/b/model/m.gguf",
        "--host", str(SOCKET), "--port", "0", "--chat-template-file", "/b/model/t.jinja",
        "--reasoning-budget", "0", "--ctx-size", "8192", "--threads", "2", "--jinja",
        "--model-draft", "/d/model/d.gguf", "--spec-draft-n-max", "5", "--spec-draft-p-min", "0.80",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("configured", "packaged", "llama_args", "expected"),
    [(None, 2048, None, "2048"), (4096, 2048, None, "4096"), (-1, 2048, None, "-1"),
     (0, 2048, None, "2048"), (None, 0, None, None), (4096, None, ("-c", "512"), "4096"),
     (None, 2048, ("-c", "512"), None)],
)  # fmt: skip
def test_context_size_precedence(
    configured: int | None, packaged: int | None, llama_args: tuple[str, ...] | None,
    expected: str | None,
) -> None:  # fmt: skip
    bundle = FakeBundle(Path("/b"), Path("/b/m.gguf"), config={"context_size": packaged})
    argv = build_argv(Path("/bin/ls"), bundle, SOCKET, llama_args,
                      config=RunnerConfig(context_size=configured))  # fmt: skip
    assert (argv[argv.index("--ctx-size") + 1] if "--ctx-size" in argv else None) == expected


def test_modes() -> None:
    bundle = FakeBundle(Path("/b"), Path("/b/m.gguf"), chat_template=Path("/b/t.jinja"))
    embedding = build_argv(Path("/x"), bundle, SOCKET, mode="embedding")
    assert "--embeddings" in embedding
    assert "--chat-template-file" not in embedding
    assert build_argv(Path("/x"), bundle, SOCKET, mode="reranking")[-3:] == [
        "--embeddings", "--reranking", "--jinja"]  # fmt: skip
    with pytest.raises(InvalidInput):
        build_argv(Path("/x"), bundle, SOCKET, mode="image-generation")


@pytest.mark.parametrize(
    ("gguf", "flags", "llama_args", "pooling"),
    [({"llama.context_length": "8192"}, (), None, ["--pooling", "mean"]),  # a chat model
     ({"bert.pooling_type": "2"}, (), None, []),  # an embedding model says how it pools
     ({"llama.context_length": "8192"}, ("--pooling", "last"), None, []),
     ({"llama.context_length": "8192"}, (), ("--pooling=cls",), []),
     (None, (), None, [])],  # metadata unknown: as DMR
)  # fmt: skip
def test_an_embedding_runner_of_a_chat_model_pools_by_mean(
    gguf: dict[str, str] | None, flags: tuple[str, ...], llama_args: tuple[str, ...] | None,
    pooling: list[str],
) -> None:  # fmt: skip
    config: dict[str, Any] = {} if gguf is None else {"gguf": gguf}
    bundle = FakeBundle(Path("/b"), Path("/b/m.gguf"), config=config)
    argv = build_argv(Path("/x"), bundle, SOCKET, llama_args, mode="embedding",
                      config=RunnerConfig(runtime_flags=flags))  # fmt: skip
    start = argv.index("--embeddings") + 1
    assert argv[start : start + len(pooling)] == pooling
    assert argv.count("--pooling") == (1 if pooling or flags else 0)
    completion = build_argv(Path("/x"), bundle, SOCKET, llama_args)
    assert "--pooling" not in completion


@dataclass
class Info:
    model_id: str
    state: str
    mode: str = "completion"


class Pool:
    def __init__(self, *infos: Info) -> None:
        self.infos = list(infos)
        self.unloaded: list[str] = []
        self.modes: list[tuple[str, ...]] = []

    def running(self) -> list[Info]:
        return self.infos

    async def unload(
        self, model_ids: Sequence[str] | None = None, *, modes: Collection[str] | None = None
    ) -> int:
        self.unloaded += list(model_ids or [])
        self.modes.append(tuple(sorted(modes or ())))
        return len(model_ids or [])


async def resolve(reference: str) -> str:
    if reference not in ("ai/a", "ai/draft"):
        raise ModelNotFound(f"model {reference!r} not found")
    return f"sha256:{reference[3:]}"


async def test_applying_a_config_stops_the_idle_runner_and_stores_it() -> None:
    configs, pool = RunnerConfigs(), Pool(Info("sha256:a", "ready"))
    request = parse_configure_request({"model": "ai/a", "context-size": 512})
    assert await apply_configure(request, resolve=resolve, pool=pool, configs=configs)
    assert pool.unloaded == ["sha256:a"]
    assert configs.get("sha256:a") == RunnerConfig(context_size=512)
    assert not await apply_configure(request, resolve=resolve, pool=pool, configs=configs)
    assert pool.unloaded == ["sha256:a"]  # identical: nothing stops
    [entry] = configs.entries("sha256:a")
    assert entry.to_api() == {"Backend": "llama.cpp", "Model": "ai/a", "ModelID": "sha256:a",
                              "Mode": "completion", "Config": {"context-size": 512}}  # fmt: skip
    assert configs.forget(["sha256:a"]) == 1
    assert configs.entries() == []


async def test_a_config_applies_to_its_mode_and_reranking_borrows_completions() -> None:
    configs = RunnerConfigs()
    pool = Pool(Info("sha256:a", "busy"), Info("sha256:a", "idle", "embedding"))
    embedding = parse_configure_request({"model": "ai/a", "mode": "embedding", "context-size": 64})
    assert await apply_configure(embedding, resolve=resolve, pool=pool, configs=configs)
    assert pool.modes == [("embedding",)]  # the busy completion runner is not this config's
    assert configs.get("sha256:a") is None
    completion = parse_configure_request({"model": "ai/a", "context-size": 512})
    with pytest.raises(Conflict, match=r"ai/a \(completion\) is loading or serving"):
        await apply_configure(completion, resolve=resolve, pool=pool, configs=configs)
    pool.infos = []
    assert await apply_configure(completion, resolve=resolve, pool=pool, configs=configs)
    assert pool.modes[-1] == ("completion", "image-generation", "reranking")
    assert configs.get("sha256:a", "reranking") == RunnerConfig(context_size=512)  # DMR's fallback
    assert configs.get("sha256:a", "embedding") == RunnerConfig(context_size=64)
    reranking = parse_configure_request({"model": "ai/a", "mode": "reranking"})
    assert await apply_configure(reranking, resolve=resolve, pool=pool, configs=configs)
    assert configs.get("sha256:a", "reranking") == RunnerConfig()
    assert configs.modes_using("sha256:a", "completion") == ("completion", "image-generation")


async def test_a_busy_runner_is_a_conflict_and_unknown_models_are_not_found() -> None:
    configs = RunnerConfigs()
    busy = Pool(Info("sha256:a", "busy"))
    with pytest.raises(Conflict, match="runner already active"):
        await apply_configure(parse_configure_request({"model": "ai/a", "context-size": 512}),
                              resolve=resolve, pool=busy, configs=configs)  # fmt: skip
    with pytest.raises(ModelNotFound):
        await apply_configure(parse_configure_request({"model": "ai/nope"}),
                              resolve=resolve, pool=busy, configs=configs)  # fmt: skip
    request = {"model": "ai/a", "speculative": {"draft_model": "ai/missing"}}
    with pytest.raises(ModelNotFound):
        await apply_configure(parse_configure_request(request),
                              resolve=resolve, pool=busy, configs=configs)  # fmt: skip
    assert configs.entries() == []


@pytest.mark.llama
async def test_a_real_llama_server_runs_with_the_configured_context(
    llama_server: Path, tiny_gguf: Path
) -> None:
    request = parse_configure_request(
        {"model": "ai/tiny", "context-size": 512, "runtime-flags": ["--threads", "1", "-np", "1"]}
    )
    server = LlamaServer(
        llama_server, FakeBundle(tiny_gguf.parent, tiny_gguf, config={"context_size": 256}),
        model_id="sha256:t", reference="ai/tiny", config=request.config,
    )  # fmt: skip
    client = UpstreamClient()
    try:
        await server.start(ready_timeout=120)
        response = await client.request(server, "GET", "/props")
        try:
            props = json.loads(await response.read())
        finally:
            await response.aclose()
    finally:
        await client.close()
        await server.stop()
    assert props["default_generation_settings"]["n_ctx"] == 512  # not the packaged 256
    assert props["total_slots"] == 1
    assert server.argv[server.argv.index("--ctx-size") + 1] == "512"
