"""OpenAI's Responses API (create, retrieve, delete, input_items) under DMR's five prefixes,
served as DMR serves it: a translation onto the model's /v1/chat/completions (through the
scheduler, like every inference request), with the responses kept in memory for an hour.

Unlike DMR, a response keeps its input too, so `previous_response_id` continues the whole
conversation and …/input_items lists the real input; an upstream error before anything was
streamed is answered with its real status. Errors use the OpenAI envelope on every prefix.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.core.errors import CoreError
from modelrunner.core.inference.upstream import sse_data
from modelrunner.server import responses_answers as answers
from modelrunner.server.errors import ApiError, core_error_response, openai_error
from modelrunner.server.openai_routes import (
    BACKENDS,
    UpstreamStreamingResponse,
    refuse_images_without_projector,
    unless_the_client_leaves,
    whole_answer,
)
from modelrunner.server.request_bodies import parse_json_object, read_body
from modelrunner.server.responses_requests import ResponsesRequest, parse_request
from modelrunner.server.responses_store import ResponseStore, StoredResponse

if TYPE_CHECKING:
    from modelrunner.core.inference.upstream import UpstreamResponse
    from modelrunner.core.runner import ModelRunner

PREFIXES = (
    "/responses", "/v1/responses", "/engines/responses", "/engines/v1/responses",
    "/engines/{backend}/v1/responses",
)  # fmt: skip
"""Where DMR serves the Responses API (pkg/routing/router.go)."""

_JSON_HEADERS = {"content-type": "application/json"}

Handler = Callable[[Request], Awaitable[Response]]


def _openai_errors(handler: Handler) -> Handler:
    """Answer errors in the OpenAI envelope, also under /responses and /engines/responses
    (where the app's handlers would answer DMR's plain text)."""

    @functools.wraps(handler)
    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return openai_error(error.status, error.message, error.code)
        except CoreError as error:
            return core_error_response(error, openai=True)

    return handle


class ResponsesApi:
    """The Responses routes over one store (each app has its own)."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    def _stored(self, request: Request) -> StoredResponse:
        _check_backend(request)
        stored = self.store.get(request.path_params["response_id"])
        if stored is None:
            raise ApiError(404, "Response not found (it expired, was deleted or never stored)")
        return stored

    async def create(self, request: Request) -> Response:
        """POST {P}: one chat completion, answered as a Response (or its event stream)."""
        _check_backend(request)
        parsed = parse_request(parse_json_object(await read_body(request)))
        history: list[dict[str, Any]] = []
        if parsed.previous_response_id:
            previous = self.store.get(parsed.previous_response_id)
            if previous is None:
                message = f'previous_response_id "{parsed.previous_response_id}" was not found'
                raise ApiError(400, message)
            history = previous.conversation
        runner: ModelRunner = request.app.state.runner
        payload = parsed.chat_payload(history)
        if any(isinstance(message.get("content"), list) for message in payload["messages"]):
            model = await runner.find_model(parsed.model)
            await refuse_images_without_projector(runner, model, parsed.model)
        body = json.dumps(payload).encode()
        forwarding = runner.forward(
            parsed.model, "/v1/chat/completions", body, _JSON_HEADERS, keep_alive=parsed.keep_alive
        )
        upstream = await unless_the_client_leaves(request, forwarding)
        if upstream is None:
            return Response(status_code=499)  # nobody is listening any more
        shape = answers.ResponseShape(parsed)
        if parsed.stream and upstream.status == 200:
            events = self._events(upstream, shape, history)
            return UpstreamStreamingResponse(upstream, events, media_type=answers.SSE)
        raw = await whole_answer(request, upstream)
        if raw is None:
            return Response(status_code=499)
        status = upstream.status
        if status != 200:
            result = shape.response("failed", error=answers.upstream_failure(status, raw))
        else:
            try:
                result = answers.completed_response(shape, json.loads(raw))
            except ValueError as error:
                status = 500
                failure = {"code": "parse_error", "message": f"llama-server's answer: {error}"}
                result = shape.response("failed", error=failure)
        self._remember(parsed, result, history)
        return JSONResponse(result, status_code=status)

    async def _events(
        self, upstream: UpstreamResponse, shape: answers.ResponseShape, history: list[Any]
    ) -> AsyncIterator[bytes]:
        stream = answers.ResponseEvents(shape)
        for event in stream.start():
            yield answers.sse_frame(event)
        events: list[dict[str, Any]] | None = None
        try:
            async for data in sse_data(upstream.iter_chunks()):
                if data == "[DONE]":
                    events = stream.finish()
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    failure = answers.upstream_failure(500, data.encode())
                    events = stream.fail(failure["code"], failure["message"])
                    break
                for event in stream.feed(chunk):
                    yield answers.sse_frame(event)
        except CoreError as error:
            events = stream.fail("upstream_error", error.message)
        except ValueError:
            events = stream.fail("parse_error", "llama-server sent a malformed event")
        if events is None:
            events = stream.fail("upstream_error", "llama-server ended the stream early")
        for event in events:
            yield answers.sse_frame(event)
        if stream.final is not None:
            self._remember(shape.request, stream.final, history)

    def _remember(
        self, parsed: ResponsesRequest, response: dict[str, Any], history: list[Any]
    ) -> None:
        if not parsed.store:
            return
        said = answers.assistant_messages(response["output"])
        conversation = [*history, *parsed.input_messages, *said]
        self.store.put(StoredResponse(response, parsed.input_items, conversation))

    async def retrieve(self, request: Request) -> Response:
        """GET {P}/{id}."""
        return JSONResponse(self._stored(request).response)

    async def delete(self, request: Request) -> Response:
        """DELETE {P}/{id}."""
        response_id = self._stored(request).response["id"]
        self.store.delete(response_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        """GET {P}/{id}/input_items?limit=&order=&after=&before=: a page of its input."""
        items = list(self._stored(request).input_items)
        query = request.query_params
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, f'order must be "asc" or "desc", not {order!r}')
        limit_text = query.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            raise ApiError(400, f"limit must be a whole number from 1 to 100, not {limit_text!r}")
        if order == "desc":
            items.reverse()
        for key in ("after", "before"):
            if key not in query:
                continue
            ids = [item["id"] for item in items]
            if query[key] not in ids:
                raise ApiError(400, f"{key} {query[key]!r} is not an input item of this response")
            position = ids.index(query[key])
            items = items[position + 1 :] if key == "after" else items[:position]
        page = items[: int(limit_text)]
        return JSONResponse({
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        })  # fmt: skip


def _check_backend(request: Request) -> None:
    backend = request.path_params.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise ApiError(404, f"backend not found: {backend!r} (available: llama.cpp)")


def routes(store: ResponseStore | None = None) -> list[BaseRoute]:
    """The Responses routes under each of DMR's prefixes, over `store` (a new one by default)."""
    api = ResponsesApi(store or ResponseStore())
    create, retrieve = _openai_errors(api.create), _openai_errors(api.retrieve)
    delete, input_items = _openai_errors(api.delete), _openai_errors(api.input_items)
    table: list[BaseRoute] = []
    for prefix in PREFIXES:
        table += [
            Route(prefix, create, methods=["POST"]),
            Route(f"{prefix}/{{response_id}}", retrieve, methods=["GET"]),
            Route(f"{prefix}/{{response_id}}", delete, methods=["DELETE"]),
            Route(f"{prefix}/{{response_id}}/input_items", input_items, methods=["GET"]),
        ]
    return table
