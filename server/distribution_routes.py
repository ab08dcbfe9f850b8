"""DMR's pull and push routes: POST /models/create and POST /models/{name…}/push, streamed progress.

The stream is DMR's: one JSON message per line, `text/plain` with each line HTML-escaped (DMR's CLI
unescapes it) unless the client asks for exactly `application/json`. An error that happens before
any progress is an ordinary HTTP error with its status (400, 401, 404, 422, 502…); one that happens
later ends the stream with an error line. A client that hangs up does not stop the pull: it goes on
in the background and a later pull of the same model joins it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from modelrunner.core.distribution.progress import dmr_progress_line, encode_line
from modelrunner.core.errors import CoreError, ModelNotFound
from modelrunner.core.events import PullFailed, PullFinished
from modelrunner.core.references import parse_reference
from modelrunner.server.errors import ApiError
from modelrunner.server.request_bodies import parse_json_object, read_body

if TYPE_CHECKING:
    from modelrunner.core.distribution.push import PushProgress
    from modelrunner.core.runner import ModelRunner

PUSHED_MESSAGE = "Model pushed successfully"

Report = Callable[[Any], None]
ToLine = Callable[[Any], bytes | None]


def _runner(request: Request) -> ModelRunner:
    runner: ModelRunner = request.app.state.runner
    return runner


async def _json_object(request: Request, *, required: bool) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        if required:
            raise ApiError(400, 'missing body: send {"from": "<model reference>"}')
        return {}
    return parse_json_object(raw)


def _token(body: dict[str, Any]) -> str | None:
    token = body.get("bearer-token")
    if token is not None and not isinstance(token, str):
        raise ApiError(400, '"bearer-token" must be a string')
    return token or None


async def create_model(request: Request) -> Response:
    """POST /models/create {"from": "<ref>", "bearer-token": "…"}: pull, streaming progress."""
    body = await _json_object(request, required=True)
    reference = body.get("from")
    if not isinstance(reference, str) or not reference.strip():
        raise ApiError(400, 'missing "from": the model reference to pull')
    reference = parse_reference(reference).normalized
    runner, token = _runner(request), _token(body)

    def start(report: Report) -> Awaitable[object]:
        return runner.pull(reference, on_progress=report, token=token)

    return await _progress_response(request, start, dmr_progress_line, "pull")


async def push_model(request: Request, name: str) -> Response:
    """POST /models/{name…}/push: push a stored model to its registry, streaming progress."""
    runner = _runner(request)
    try:
        await runner.get_model(name)  # a missing model is a 404 before anything streams
    except ModelNotFound as error:  # said so that it cannot read as "not in the registry"
        raise ModelNotFound(
            f"no model {name} in the local store to push: pull, package or tag it first"
        ) from error
    await _json_object(request, required=False)

    def start(report: Report) -> Awaitable[object]:
        return runner.push(name, on_progress=report)

    return await _progress_response(request, start, _push_line, "push")


_PUSH_STATES = {"exists": "Already exists", "mounted": "Mounted"}
"""Push states that say more than DMR's byte count; the CLI shows them as the layer's status."""


def _push_line(event: PushProgress, *, html_escape: bool = False) -> bytes | None:
    layer = {"id": event.digest, "size": event.size, "current": event.current}
    text = _PUSH_STATES.get(event.state, event.message)
    message = {"type": "progress", "message": text, "total": event.total,
               "layer": layer, "mode": "push"}  # fmt: skip
    return encode_line(message, html_escape=html_escape)


def _final_line(mode: str, error: BaseException | None, html_escape: bool) -> bytes:
    """The closing success or error message of a stream (pushes; pulls report their own)."""
    empty = {"size": 0, "current": 0}
    if error is None:
        message = {"type": "success", "message": PUSHED_MESSAGE, "total": 0, "layer": empty}
    else:
        text = error.message if isinstance(error, CoreError) else "internal error"
        message = {"type": "error", "message": f"Error: {text}", "total": 0, "layer": empty}
    return encode_line({**message, "mode": mode}, html_escape=html_escape)


async def _progress_response(
    request: Request,
    start: Callable[[Report], Awaitable[object]],
    to_line: Callable[..., bytes | None],
    mode: str,
) -> Response:
    """Run `start` with a progress callback and stream its events as DMR's lines."""
    html_escape = request.headers.get("accept", "").strip() != "application/json"
    events: asyncio.Queue[Any] = asyncio.Queue()
    done = object()
    task: asyncio.Task[object] = asyncio.ensure_future(start(events.put_nowait))
    task.add_done_callback(lambda _: events.put_nowait(done))
    keep_running(request, task)
    first = await events.get()
    if isinstance(first, PullFailed):  # failed before any progress: wait for the real error
        while first is not done:
            first = await events.get()
    if first is done and not task.cancelled() and (error := task.exception()) is not None:
        raise error  # nothing streamed yet: an ordinary HTTP error with its status

    async def lines() -> AsyncIterator[bytes]:
        event, ended = first, False
        while event is not done:
            ended = ended or isinstance(event, PullFinished | PullFailed)
            if (line := to_line(event, html_escape=html_escape)) is not None:
                yield line
            event = await events.get()
        if not ended:
            error = task.exception()
            if mode == "push" or error is not None:
                yield _final_line(mode, error, html_escape)

    media_type = "text/plain; charset=utf-8" if html_escape else "application/json"
    return StreamingResponse(lines(), media_type=media_type, headers={"X-Accel-Buffering": "no"})


def keep_running(request: Request, task: asyncio.Task[object]) -> None:
    """Hold the task until it ends, whether or not the client stays to watch it."""
    tasks: set[asyncio.Task[object]] = getattr(request.app.state, "transfers", None) or set()
    request.app.state.transfers = tasks
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    # Retrieve the exception so an abandoned failed task is not reported as never retrieved.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
