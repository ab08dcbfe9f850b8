"""Ollama's API (/api/…) over the same runner, so Ollama clients work unchanged; this module
serves chat, generate and embeddings, and gathers every Ollama route (server.ollama_model_routes
has the rest).

Requests go to llama-server through the scheduler (queueing, loading, keep_alive, client
disconnects) as OpenAI requests, translated by server.ollama_requests and server.ollama_answers;
streams are NDJSON. Errors are Ollama's `{"error": "…"}` (server.errors): 400 for bad input, 404
for unknown models.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.core.errors import Conflict, CoreError
from modelrunner.core.inference.configure import ConfigureRequest, RunnerConfig
from modelrunner.core.inference.modes import COMPLETION
from modelrunner.core.inference.upstream import sse_data, upstream_error
from modelrunner.core.references import model_name
from modelrunner.server import ollama_answers as answers
from modelrunner.server import ollama_model_routes
from modelrunner.server.errors import ApiError
from modelrunner.server.ollama_requests import (
    dimensions_field,
    embed_inputs,
    format_fields,
    json_body,
    keep_alive_seconds,
    model_field,
    openai_messages,
    options_fields,
    stream_field,
    text_field,
    think_fields,
    tools_field,
)
from modelrunner.server.openai_routes import (
    UpstreamStreamingResponse,
    refuse_images_without_projector,
    unless_the_client_leaves,
    whole_answer,
)

if TYPE_CHECKING:
    from modelrunner.core.runner import ModelRunner
    from modelrunner.core.store.store import StoredModel

logger = logging.getLogger(__name__)

CHAT_BODY_LIMIT = 64 * 1024 * 1024
"""Chat and generate bodies carry base64 images: a larger limit than OpenAI requests'."""

_JSON_HEADERS = {"content-type": "application/json"}


def _runner(request: Request) -> ModelRunner:
    runner: ModelRunner = request.app.state.runner
    return runner


async def _load_or_unload(
    runner: ModelRunner,
    model: StoredModel,
    shape: answers.AnswerShape,
    keep_alive: float | None,
    num_ctx: int | None,
) -> Response:
    """Ollama's empty request: load the model with its num_ctx (keep_alive 0: unload it)."""
    if keep_alive == 0:
        await runner.unload([model.id], include_busy=False)
        return JSONResponse(shape.answer("", done=True, done_reason="unload"))
    await _apply_num_ctx(runner, model, num_ctx)
    await runner.load(model.id, keep_alive=keep_alive)
    return JSONResponse(shape.answer("", done=True, done_reason="load"))


async def _apply_num_ctx(runner: ModelRunner, model: StoredModel, num_ctx: int | None) -> None:
    """options.num_ctx: configure the model's context size (reloading an idle runner), as
    Ollama reloads a model for another num_ctx; a busy runner keeps its size for now."""
    if num_ctx is None or num_ctx == await ollama_model_routes.context_length(runner, model):
        return
    entries = await runner.configurations(model.id)
    current = next((e.config for e in entries if e.mode == COMPLETION), RunnerConfig())
    configure = ConfigureRequest(
        model=model_name(model.tags, model.id),
        mode=COMPLETION,
        config=replace(current, context_size=num_ctx),
    )
    try:
        await runner.configure(configure)
    except Conflict as error:
        logger.info("num_ctx %d not applied now: %s", num_ctx, error.message)


async def _check_images(
    runner: ModelRunner, model: StoredModel, name: str, messages: list[dict[str, Any]]
) -> None:
    """A 400 when `messages` carry images and the model has no projector to see them."""
    if any(isinstance(message["content"], list) for message in messages):
        await refuse_images_without_projector(runner, model, name)


async def _infer(
    request: Request,
    model: StoredModel,
    path: str,
    payload: dict[str, Any],
    *,
    shape: answers.AnswerShape,
    stream: bool,
    keep_alive: float | None,
    started: float,
) -> Response:
    """Send an OpenAI request to the model's llama-server; answer in Ollama's shape."""
    runner = _runner(request)
    body = json.dumps({**payload, "model": shape.model, "stream": stream}).encode()
    forwarding = runner.forward(model.id, path, body, _JSON_HEADERS, keep_alive=keep_alive)
    upstream = await unless_the_client_leaves(request, forwarding)
    if upstream is None:
        return Response(status_code=499)  # nobody is listening any more
    if not stream or upstream.status != 200:
        raw = await whole_answer(request, upstream)
        if raw is None:
            return Response(status_code=499)
        if upstream.status != 200:
            raise upstream_error(upstream.status, raw, shape.model)
        reply = answers.Reply()
        reply.feed(json.loads(raw))
        stats = reply.statistics(time.monotonic() - started)
        text, thinking = "".join(reply.content), "".join(reply.thinking)
        return JSONResponse(shape.answer(text, thinking, reply.tool_calls(), done=True, **stats))

    async def lines() -> AsyncIterator[bytes]:
        reply = answers.Reply()
        try:
            async for data in sse_data(upstream.iter_chunks()):
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    error = upstream_error(500, data.encode(), shape.model)
                    yield answers.ndjson_line({"error": error.message})
                    return
                text, thinking = reply.feed(chunk)
                if text or thinking:
                    yield answers.ndjson_line(shape.answer(text, thinking))
        except CoreError as error:
            yield answers.ndjson_line({"error": error.message})
            return
        except ValueError:
            yield answers.ndjson_line({"error": "llama-server sent a malformed event"})
            return
        if calls := reply.tool_calls():
            yield answers.ndjson_line(shape.answer("", tool_calls=calls))
        stats = reply.statistics(time.monotonic() - started)
        yield answers.ndjson_line(shape.answer("", done=True, **stats))

    return UpstreamStreamingResponse(upstream, lines(), media_type=answers.NDJSON)


async def chat(request: Request) -> Response:
    """POST /api/chat."""
    started = time.monotonic()
    body = await json_body(request, CHAT_BODY_LIMIT)
    name, stream = model_field(body), stream_field(body)
    keep_alive = keep_alive_seconds(body.get("keep_alive"))
    shape = answers.AnswerShape(name, chat=True)
    messages = openai_messages(body.get("messages") or [])
    fields, num_ctx = options_fields(body.get("options"))
    payload = {
        "messages": messages,
        **fields,
        **format_fields(body.get("format")),
        **think_fields(body.get("think")),
        **tools_field(body.get("tools")),
    }
    runner = _runner(request)
    model = await runner.find_model(name)
    if not messages:
        return await _load_or_unload(runner, model, shape, keep_alive, num_ctx)
    await _check_images(runner, model, name, messages)
    await _apply_num_ctx(runner, model, num_ctx)
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return await _infer(request, model, "/v1/chat/completions", payload, shape=shape,
                        stream=stream, keep_alive=keep_alive, started=started)  # fmt: skip


async def generate(request: Request) -> Response:
    """POST /api/generate: one prompt (through the chat template unless `raw`)."""
    started = time.monotonic()
    body = await json_body(request, CHAT_BODY_LIMIT)
    name, stream = model_field(body), stream_field(body)
    keep_alive = keep_alive_seconds(body.get("keep_alive"))
    shape = answers.AnswerShape(name, chat=False)
    prompt, system = text_field(body, "prompt"), text_field(body, "system")
    images = body.get("images") or []
    raw = body.get("raw") is True
    if text_field(body, "suffix"):
        raise ApiError(
            400, f"{name} does not support insert (suffix): fill-in-the-middle is not served"
        )
    if raw and images:
        raise ApiError(400, "images need the chat template: send them without raw")
    fields, num_ctx = options_fields(body.get("options"))
    payload: dict[str, Any] = {**fields, **format_fields(body.get("format"))}
    if raw:
        payload["prompt"] = prompt
    else:
        user = {"role": "user", "content": prompt, "images": images}
        conversation = [{"role": "system", "content": system}] if system else []
        payload["messages"] = openai_messages([*conversation, user])
        payload.update(think_fields(body.get("think")))
    runner = _runner(request)
    model = await runner.find_model(name)
    if not prompt and not images:
        return await _load_or_unload(runner, model, shape, keep_alive, num_ctx)
    await _check_images(runner, model, name, payload.get("messages") or [])
    await _apply_num_ctx(runner, model, num_ctx)
    path = "/v1/completions" if raw else "/v1/chat/completions"
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return await _infer(request, model, path, payload, shape=shape,
                        stream=stream, keep_alive=keep_alive, started=started)  # fmt: skip


async def _embed(
    request: Request, name: str, inputs: list[str], keep_alive: float | None
) -> dict[str, Any] | None:
    """The OpenAI embeddings answer for `inputs`; None when the client left."""
    runner = _runner(request)
    model = await runner.find_model(name)
    body = json.dumps({"model": name, "input": inputs}).encode()

    async def exchange() -> tuple[int, bytes]:
        upstream = await runner.forward(
            model.id, "/v1/embeddings", body, _JSON_HEADERS, keep_alive=keep_alive
        )
        try:
            return upstream.status, await upstream.read()
        finally:
            await upstream.aclose()

    answered = await unless_the_client_leaves(request, exchange())
    if answered is None:
        return None
    status, raw = answered
    if status != 200:
        raise upstream_error(status, raw, name)
    answer: dict[str, Any] = json.loads(raw)
    return answer


async def embed(request: Request) -> Response:
    """POST /api/embed {"model", "input": text or list} -> {"embeddings": [[…], …]}."""
    started = time.monotonic()
    body = await json_body(request)
    name = model_field(body)
    inputs = embed_inputs(body.get("input", []))
    dimensions = dimensions_field(body.get("dimensions"))
    keep_alive = keep_alive_seconds(body.get("keep_alive"))
    if not inputs:
        await _runner(request).find_model(name)
        return JSONResponse({"model": name, "embeddings": []})
    answer = await _embed(request, name, inputs, keep_alive)
    if answer is None:
        return Response(status_code=499)
    usage = answer.get("usage") or {}
    result = {
        "model": name,
        "embeddings": answers.embeddings(answer, dimensions),
        "total_duration": round((time.monotonic() - started) * answers.NS_PER_SECOND),
    }
    if isinstance(usage.get("prompt_tokens"), int):
        result["prompt_eval_count"] = usage["prompt_tokens"]
    return JSONResponse(result)


async def embeddings(request: Request) -> Response:
    """POST /api/embeddings {"model", "prompt"} -> {"embedding": […]} (Ollama's older route)."""
    body = await json_body(request)
    name = model_field(body)
    prompt = text_field(body, "prompt")
    keep_alive = keep_alive_seconds(body.get("keep_alive"))
    if not prompt:
        await _runner(request).find_model(name)
        return JSONResponse({"embedding": []})
    answer = await _embed(request, name, [prompt], keep_alive)
    if answer is None:
        return Response(status_code=499)
    [vector] = answers.embeddings(answer, None) or [[]]
    return JSONResponse({"embedding": vector})


def routes() -> list[BaseRoute]:
    """Every Ollama route, under /api/."""
    return [
        *ollama_model_routes.routes(),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
    ]
