"""OpenAI-compatible routes: /engines[/llama.cpp]/v1/… and /v1/…, and DMR's /rerank and /score;
a lean proxy to llama-server. The path picks the model's runner: chat and completions go to its
completion runner, embeddings to its embedding runner, rerank and score to its reranking one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.core.errors import CoreError
from modelrunner.core.inference.configure import MAX_KEEP_ALIVE, parse_keep_alive
from modelrunner.core.references import model_name
from modelrunner.server.errors import ApiError
from modelrunner.server.request_bodies import parse_json_object, read_body
from modelrunner.server.streaming import ListeningStreamingResponse

if TYPE_CHECKING:
    from modelrunner.core.inference.upstream import UpstreamResponse
    from modelrunner.core.runner import ModelRunner
    from modelrunner.core.store.store import StoredModel


T = TypeVar("T")

BACKENDS = ("llama.cpp",)
"""Backends a path may name in /engines/{backend}/v1/…."""

PROXIED_OPERATIONS = ("chat/completions", "completions", "embeddings")
"""What is forwarded to llama-server, under /v1/."""

RERANK_OPERATIONS = ("rerank", "score")
"""What is forwarded to a reranking runner, under /, /engines/ and /engines/{backend}/ (DMR has
no /v1/rerank: there it means backend "v1", which is not found)."""

_FORWARDED_RESPONSE_HEADERS = ("content-type", "cache-control")
_REQUEST_HEADERS_KEPT = ("content-type", "accept", "user-agent", "x-request-origin")


class UpstreamStreamingResponse(ListeningStreamingResponse):
    """Streams a runner's answer as it arrives; a client that leaves closes the upstream at once."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        translated: AsyncIterator[bytes] | None = None,
        media_type: str | None = None,
    ) -> None:
        """Stream `upstream` as it is, or `translated` (made from it) as a 200 of `media_type`."""
        if translated is not None:
            headers = {"X-Accel-Buffering": "no", "cache-control": "no-cache"}
            super().__init__(translated, media_type=media_type, headers=headers)
            self.upstream = upstream
            return
        content_type = upstream.headers.get("content-type", "application/octet-stream")
        headers = {
            name: upstream.headers[name]
            for name in _FORWARDED_RESPONSE_HEADERS
            if name in upstream.headers
        }
        if content_type.startswith("text/event-stream"):
            headers["X-Accel-Buffering"] = "no"
            headers.setdefault("cache-control", "no-cache")
        super().__init__(upstream.iter_chunks(), status_code=upstream.status, headers=headers)
        self.upstream = upstream

    async def release(self) -> None:
        """Release the runner's connection (and its slot), even when the client left early."""
        await self.upstream.aclose()


def _runner(request: Request) -> ModelRunner:
    runner: ModelRunner = request.app.state.runner
    return runner


def _check_backend(request: Request) -> None:
    backend = request.path_params.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise ApiError(404, f"backend not found: {backend!r} (available: llama.cpp)")


def requested_model(body: bytes) -> tuple[str, float | None]:
    """The body's "model" and optional "keep_alive", checked (nothing else is validated).

    keep_alive is Ollama's: a duration string ("5m", "0", "-1") or a number of seconds; 0 unloads
    the model after this request, a negative value keeps it loaded for good.
    """
    payload = parse_json_object(body)
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, 'model is required: set "model" to a model name, e.g. "ai/smollm2"')
    return model, requested_keep_alive(payload)


def requested_keep_alive(payload: Mapping[str, Any]) -> float | None:
    """The body's optional "keep_alive" in seconds, checked (see `requested_model`)."""
    raw = payload.get("keep_alive")
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if abs(raw) > MAX_KEEP_ALIVE:
            raise ApiError(400, f"keep_alive {raw!r} is out of range (seconds, at most ~292 years)")
        return float(raw)
    return parse_keep_alive(raw)


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers llama-server should see."""
    return {name: headers[name] for name in _REQUEST_HEADERS_KEPT if name in headers}


def upstream_path(path: str) -> str:
    """What llama-server is asked: the path from its first /v1/, else /rerank or /score (DMR)."""
    if "/v1/" in path:
        return "/v1/" + path.split("/v1/", 1)[1]
    return "/" + path.rstrip("/").rsplit("/", 1)[-1]


async def proxy(request: Request) -> Response:
    """POST …/v1/chat/completions, /completions, /embeddings, …/rerank, …/score: forward to
    the model's llama-server in the mode the path needs."""
    _check_backend(request)
    body = await read_body(request)
    model, keep_alive = requested_model(body)
    if request.headers.get("x-preload-only") == "true":  # DMR: load, answer 200 with no body
        await _runner(request).load(model, upstream_path(request.url.path), keep_alive=keep_alive)
        return Response(status_code=200)
    forwarding = _runner(request).forward(
        model,
        upstream_path(request.url.path),
        body,
        forwarded_headers(request.headers),
        keep_alive=keep_alive,
    )
    upstream = await unless_the_client_leaves(request, forwarding)
    if upstream is None:
        return Response(status_code=499)  # nobody is listening any more
    return UpstreamStreamingResponse(upstream)


async def whole_answer(request: Request, upstream: UpstreamResponse) -> bytes | None:
    """The runner's whole answer, then its connection released; None if the client left first."""
    try:
        return await unless_the_client_leaves(request, upstream.read())
    finally:
        await upstream.aclose()


async def unless_the_client_leaves(
    request: Request, forwarding: Coroutine[Any, Any, T]
) -> T | None:
    """Await `forwarding`, but cancel it (and its llama-server request) if the client hangs up.

    A non-streamed answer, a queued request or a model load sends nothing for a long time;
    without this, llama-server would go on generating for a client that has gone.
    """
    task = asyncio.ensure_future(forwarding)

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, CoreError):
        await task
    return None


async def refuse_images_without_projector(
    runner: ModelRunner, model: StoredModel, name: str
) -> None:
    """Images need a multimodal projector: a model without one is a 400, not llama-server's 500."""
    bundle = await asyncio.to_thread(runner.store.bundle, model.id)
    if bundle.mmproj is None:
        raise ApiError(400, f"{name} does not support images: it has no multimodal projector")


def openai_model_id(model: StoredModel) -> str:
    """The id clients send back: the first tag in normalised form ("ai/smollm2:135M-Q4_1").

    DMR answers the stored form ("docker.io/ai/…"); the normalised one is what people type and
    resolves to the same model, so clients that echo the id back keep working.
    """
    return model_name(model.tags, model.id)


def context_window(config: Mapping[str, Any]) -> int | None:
    """config.context_size, else the GGUF `<architecture>.context_length`."""
    size = config.get("context_size")
    if isinstance(size, int) and size > 0:
        return size
    gguf = config.get("gguf") or {}
    architecture = config.get("architecture") or "llama"
    raw = gguf.get(f"{architecture}.context_length") or gguf.get("llama.context_length")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def openai_model(model: StoredModel) -> dict[str, Any]:
    """One entry of the OpenAI model list, with DMR's extra `dmr` object."""
    config = model.config
    return {
        "id": openai_model_id(model),
        "object": "model",
        "created": model.created,
        "owned_by": "docker",
        "dmr": {
            "context_window": context_window(config),
            "architecture": config.get("architecture", ""),
            "parameters": config.get("parameters", ""),
            "quantization": config.get("quantization", ""),
            "size": config.get("size", ""),
        },
    }


async def list_models(request: Request) -> Response:
    """GET …/v1/models."""
    _check_backend(request)
    models = await _runner(request).list_models()
    return JSONResponse({"object": "list", "data": [openai_model(model) for model in models]})


async def get_model(request: Request) -> Response:
    """GET …/v1/models/{name…}: exact lookup (no partial names, like DMR)."""
    _check_backend(request)
    model = await _runner(request).get_model(request.path_params["name"])
    return JSONResponse(openai_model(model))


def routes() -> list[BaseRoute]:
    """Every OpenAI-compatible route, under each of DMR's three prefixes, and rerank/score."""
    table: list[BaseRoute] = []
    for prefix in ("/engines/v1", "/v1", "/engines/{backend}/v1"):
        table.append(Route(f"{prefix}/models", list_models, methods=["GET"]))
        table.append(Route(f"{prefix}/models/{{name:path}}", get_model, methods=["GET"]))
        table.extend(
            Route(f"{prefix}/{operation}", proxy, methods=["POST"])
            for operation in PROXIED_OPERATIONS
        )
    for prefix in ("", "/engines", "/engines/{backend}"):
        table.extend(
            Route(f"{prefix}/{operation}", proxy, methods=["POST"])
            for operation in RERANK_OPERATIONS
        )
    return table
