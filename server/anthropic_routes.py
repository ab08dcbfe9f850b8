"""Anthropic's Messages API: /anthropic/v1/messages[/count_tokens] with Anthropic-shaped errors,
and /v1/messages[/count_tokens] under DMR's OpenAI prefixes without them.

llama-server answers /v1/messages and /v1/messages/count_tokens itself (Anthropic's request and
answer shapes, its SSE events, tools and tool results), so, as in DMR, nothing is translated: the
body goes to the model's completion runner as it came and the answer streams straight back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelrunner.core.errors import CoreError, ModelNotFound
from modelrunner.server.errors import ApiError, anthropic_error
from modelrunner.server.openai_routes import (
    UpstreamStreamingResponse,
    forwarded_headers,
    proxy,
    refuse_images_without_projector,
    requested_keep_alive,
    unless_the_client_leaves,
    upstream_path,
)
from modelrunner.server.request_bodies import parse_json_object, read_body

if TYPE_CHECKING:
    from modelrunner.core.inference.upstream import UpstreamResponse
    from modelrunner.core.runner import ModelRunner

REQUEST_ORIGIN = "anthropic/messages"
"""The X-Request-Origin DMR sets on what it forwards from /anthropic/."""

SSE = "text/event-stream"

OPERATIONS = ("messages", "messages/count_tokens")
"""What is forwarded to llama-server, under /v1/."""


def anthropic_request(body: bytes) -> tuple[str, float | None]:
    """The body's "model" and optional "keep_alive", after DMR's checks in DMR's words, and a
    "messages" check of ours (llama-server answers a 500 without one)."""
    try:
        payload = parse_json_object(body)
    except ApiError:
        raise ApiError(400, "Invalid JSON in request body") from None
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "Missing required field: model")
    if "messages" not in payload:
        raise ApiError(400, "Missing required field: messages")
    if not isinstance(payload["messages"], list):
        raise ApiError(400, "messages: Input should be a valid list")
    return model, requested_keep_alive(payload)


def _has_images(messages: list[Any]) -> bool:
    """Whether any message (or a tool result in one) carries an image block."""
    blocks = [
        block
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict)
    ]
    results = [block["content"] for block in blocks if isinstance(block.get("content"), list)]
    nested = [block for content in results for block in content if isinstance(block, dict)]
    return any(block.get("type") == "image" for block in [*blocks, *nested])


def upstream_error_message(raw: bytes) -> str:
    """What a llama-server error body says (its OpenAI envelope's message, else the text)."""
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    return raw.decode("utf-8", "replace").strip() or "llama-server refused the request"


async def _anthropic_upstream_error(upstream: UpstreamResponse) -> Response:
    try:
        raw = await upstream.read()
    finally:
        await upstream.aclose()
    return anthropic_error(upstream.status, upstream_error_message(raw))


async def messages(request: Request) -> Response:
    """POST /anthropic/v1/messages[/count_tokens]: checked, then forwarded to the model's
    completion runner; llama-server's own errors are given Anthropic's shape too."""
    body = await read_body(request)
    model, keep_alive = anthropic_request(body)
    runner: ModelRunner = request.app.state.runner
    path = upstream_path(request.url.path)
    headers = forwarded_headers(request.headers) | {"x-request-origin": REQUEST_ORIGIN}
    try:
        if request.headers.get("x-preload-only") == "true":
            await runner.load(model, path, keep_alive=keep_alive)
            return Response(status_code=200)
        if _has_images(json.loads(body)["messages"]):
            await refuse_images_without_projector(runner, await runner.find_model(model), model)
        forwarding = runner.forward(model, path, body, headers, keep_alive=keep_alive)
        upstream = await unless_the_client_leaves(request, forwarding)
    except ModelNotFound:
        raise ApiError(404, f"Model not found: {model}") from None
    if upstream is None:
        return Response(status_code=499)  # nobody is listening any more
    if upstream.status >= 400:
        return await _anthropic_upstream_error(upstream)
    if upstream.headers.get("content-type", "").startswith("text/event-stream"):
        return UpstreamStreamingResponse(upstream, _events(upstream), media_type=SSE)
    return UpstreamStreamingResponse(upstream)


async def _events(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """llama-server's events as they come; a runner that breaks off mid-stream ends them with
    Anthropic's `error` event (its SDKs raise it), not with a cut connection."""
    try:
        async for chunk in upstream.iter_chunks():
            yield chunk
    except CoreError as error:
        failure = {"type": "error", "error": {"type": "api_error", "message": error.message}}
        yield f"event: error\ndata: {json.dumps(failure, ensure_ascii=False)}\n\n".encode()


def routes() -> list[BaseRoute]:
    """/anthropic/v1/… (checked, Anthropic's errors) and the same under DMR's OpenAI prefixes
    (straight to the scheduler, as DMR)."""
    table: list[BaseRoute] = [
        Route(f"/anthropic/v1/{operation}", messages, methods=["POST"]) for operation in OPERATIONS
    ]
    for prefix in ("/engines/v1", "/v1", "/engines/{backend}/v1"):
        table.extend(
            Route(f"{prefix}/{operation}", proxy, methods=["POST"]) for operation in OPERATIONS
        )
    return table
