"""Ollama's model routes: /api/version, tags, show, ps, pull, delete, copy.

Names are Ollama's ("smollm2:135M-Q4_1", "hf.co/org/repo:Q4_K_M"): listed one per tag, and found
as the OpenAI routes find them (a bare name finds the one model of that repository).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from modelrunner.core.errors import CoreError, InvalidInput
from modelrunner.core.events import PullFailed, PullFinished
from modelrunner.core.inference.configure import MAX_KEEP_ALIVE
from modelrunner.core.inference.modes import COMPLETION
from modelrunner.core.references import parse_reference
from modelrunner.core.store.gguf_header import read_header
from modelrunner.server import ollama_answers as answers
from modelrunner.server.distribution_routes import keep_running
from modelrunner.server.engines_routes import go_time
from modelrunner.server.errors import ApiError
from modelrunner.server.ollama_requests import json_body, model_field, stream_field, text_field

if TYPE_CHECKING:
    from modelrunner.core.inference.pool import RunnerInfo
    from modelrunner.core.runner import ModelRunner
    from modelrunner.core.store.store import StoredModel

OLLAMA_API_VERSION = "0.9.0"
"""The Ollama release whose API this follows (thinking, streamed tool calls, structured output),
so clients that enable features by version enable them."""

_GONE_STATES = frozenset({"crashed", "stopping", "stopped"})


def _runner(request: Request) -> ModelRunner:
    runner: ModelRunner = request.app.state.runner
    return runner


async def version(request: Request) -> Response:
    """GET /api/version."""
    return JSONResponse({"version": OLLAMA_API_VERSION})


def _listing(model: StoredModel, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": go_time(model.created),
        "size": model.size_bytes,
        "digest": answers.digest_hex(model.id),
        "details": answers.model_details(model.config),
    }


async def tags(request: Request) -> Response:
    """GET /api/tags: every stored model, one entry per tag."""
    models = await _runner(request).list_models()
    listing = [_listing(model, name) for model in models for name in answers.model_names(model)]
    return JSONResponse({"models": listing})


def _read_gguf(runner: ModelRunner, model: StoredModel, verbose: bool) -> dict[str, Any]:
    """model_info, template and capabilities from the model's GGUF header (in a thread)."""
    architecture = str(model.config.get("architecture") or "")
    try:
        bundle = runner.store.bundle(model.id)
        header = read_header(bundle.gguf, keep_elements=sys.maxsize if verbose else 50)
    except InvalidInput:  # not a GGUF model: what its config says
        return {"model_info": {"general.architecture": architecture},
                "capabilities": answers.capabilities(architecture, (), "", False)}  # fmt: skip
    info = {key: answers.gguf_value(kv.value) for key, kv in header.kv.items()}
    template = str(info.pop("tokenizer.chat_template", "") or "")
    if bundle.chat_template is not None:
        template = bundle.chat_template.read_text(errors="replace")
    info.setdefault("general.parameter_count", sum(t.n_elements for t in header.tensors))
    shown: dict[str, Any] = {"model_info": info}
    if template:
        shown["template"] = template
    if isinstance(info.get("general.license"), str):
        shown["license"] = info["general.license"]
    shown["capabilities"] = answers.capabilities(
        str(info.get("general.architecture") or architecture),
        list(info),
        template,
        bundle.mmproj is not None,
    )
    return shown


async def show(request: Request) -> Response:
    """POST /api/show: details, model_info (typed GGUF keys), template, capabilities."""
    body = await json_body(request)
    name = model_field(body)
    verbose = body.get("verbose") is True
    runner = _runner(request)
    model = await runner.find_model(name)
    shown = await asyncio.to_thread(_read_gguf, runner, model, verbose)
    shown.update(details=answers.model_details(model.config), modified_at=go_time(model.created))
    return JSONResponse(shown)


def _expires_at(info: RunnerInfo, idle_timeout: float, now: float) -> float:
    keep_alive = idle_timeout if info.keep_alive is None else info.keep_alive
    if keep_alive < 0:
        return now + MAX_KEEP_ALIVE
    busy = info.in_use > 0 or info.loading
    return (now if busy else info.last_used) + keep_alive


async def running(request: Request) -> Response:
    """GET /api/ps: loaded models (a model's runners in every mode counted together)."""
    runner = _runner(request)
    stored = {model.id: model for model in await runner.list_models()}
    now = time.time()
    by_model: dict[str, list[RunnerInfo]] = {}
    for info in runner.running():
        if info.state not in _GONE_STATES and info.model_id in stored:
            by_model.setdefault(info.model_id, []).append(info)
    entries = []
    for model_id, infos in by_model.items():
        model = stored[model_id]
        name = answers.model_names(model)[0]
        expires = max(_expires_at(i, runner.settings.idle_timeout, now) for i in infos)
        entry = {
            "name": name,
            "model": name,
            "size": sum(i.memory_bytes for i in infos) or model.size_bytes,
            "digest": answers.digest_hex(model_id),
            "details": answers.model_details(model.config),
            "expires_at": go_time(expires),
            "size_vram": sum(i.vram_bytes for i in infos),
            "context_length": await context_length(runner, model),
        }
        entries.append((expires, entry))
    entries.sort(key=lambda pair: -pair[0])  # the longest left to live first, as Ollama
    return JSONResponse({"models": [entry for _, entry in entries]})


def _named_tag(model: StoredModel, name: str) -> str | None:
    """The stored tag a name means ("smollm2" -> "docker.io/ai/smollm2:135M-Q4_1"), or None
    when it named the model by its ID."""
    try:
        wanted = parse_reference(name).normalized
    except CoreError:
        wanted = None
    for tag in model.tags:
        if answers.ollama_name(tag) == answers.ollama_name(wanted or "") or tag == name:
            return tag
    repository, _, tag_wanted = name.partition(":")
    for tag in model.tags:
        stored_repository, _, stored_tag = tag.rpartition(":")
        if stored_repository.rsplit("/", 1)[-1] == repository and tag_wanted in ("", stored_tag):
            return tag
    return None


async def delete(request: Request) -> Response:
    """DELETE /api/delete {"model"}: remove that name; the model goes with its last name."""
    name = model_field(await json_body(request))
    runner = _runner(request)
    model = await runner.find_model(name)
    await runner.remove_model(_named_tag(model, name) or model.id)
    return Response(status_code=200)


async def copy(request: Request) -> Response:
    """POST /api/copy {"source", "destination"}: give the source model another name."""
    body = await json_body(request)
    source, destination = text_field(body, "source"), text_field(body, "destination")
    if not source.strip() or not destination.strip():
        raise ApiError(400, 'both "source" and "destination" are required')
    runner = _runner(request)
    model = await runner.find_model(source.strip())
    await runner.tag_model(model.id, destination.strip())
    return Response(status_code=200)


async def pull(request: Request) -> Response:
    """POST /api/pull {"model", "stream"}: pull with Ollama's progress statuses.

    As on POST /models/create, a client that hangs up does not stop the pull, and a failure
    before any progress is an ordinary HTTP error with its status.
    """
    body = await json_body(request)
    name = model_field(body)
    stream = stream_field(body)
    if body.get("insecure") is not None and not isinstance(body["insecure"], bool):
        raise ApiError(400, f'"insecure" must be true or false, not {body["insecure"]!r}')
    reference = parse_reference(name).normalized
    events: asyncio.Queue[Any] = asyncio.Queue()
    done = object()
    task: asyncio.Task[object] = asyncio.ensure_future(
        _runner(request).pull(reference, on_progress=events.put_nowait)
    )
    task.add_done_callback(lambda _: events.put_nowait(done))
    keep_running(request, task)
    if not stream:
        await asyncio.shield(task)
        return JSONResponse({"status": "success"})
    first = await events.get()
    if isinstance(first, PullFailed):  # failed before any progress: wait for the real error
        while first is not done:
            first = await events.get()
    if first is done and not task.cancelled() and (error := task.exception()) is not None:
        raise error

    async def lines() -> AsyncIterator[bytes]:
        yield answers.ndjson_line({"status": "pulling manifest"})
        event, ended = first, False
        while event is not done:
            ended = ended or isinstance(event, PullFinished | PullFailed)
            for status in answers.pull_statuses(event):
                yield answers.ndjson_line(status)
            event = await events.get()
        if not ended:
            failure = None if task.cancelled() else task.exception()
            message = "the pull was cancelled" if failure is None else str(failure)
            yield answers.ndjson_line({"error": getattr(failure, "message", message)})

    return StreamingResponse(
        lines(), media_type=answers.NDJSON, headers={"X-Accel-Buffering": "no"}
    )


async def context_length(runner: ModelRunner, model: StoredModel) -> int | None:
    """The context the model's completion runner runs with: its _configure'd size, else its own."""
    for entry in await runner.configurations(model.id):
        if entry.mode == COMPLETION and (entry.config.context_size or 0) > 0:
            return entry.config.context_size
    return answers.context_length(model.config)


def routes() -> list[BaseRoute]:
    """The model routes under /api/."""
    return [
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", running, methods=["GET"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/delete", delete, methods=["DELETE"]),
        Route("/api/copy", copy, methods=["POST"]),
    ]
