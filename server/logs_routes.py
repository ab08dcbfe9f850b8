"""GET /logs?follow=bool&no-engines=bool: the service and engine logs, merged, as text (DMR's)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from modelrunner.server.errors import ApiError

if TYPE_CHECKING:
    from modelrunner.core.runner import ModelRunner

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def go_bool(request: Request, name: str) -> bool:
    """A query parameter read as Go's strconv.ParseBool does (absent or empty: false).

    Raises:
        ApiError: 400 `invalid <name> parameter: "<value>" is not a valid boolean`, DMR's words.
    """
    raw = request.query_params.get(name, "")
    if raw == "" or raw in _GO_FALSE:
        return False
    if raw in _GO_TRUE:
        return True
    raise ApiError(400, f"invalid {name} parameter: {json.dumps(raw)} is not a valid boolean")


class FollowedLogResponse(StreamingResponse):
    """Streams the logs; a client that leaves ends the stream at once, even while no line comes.

    Starlette only notices a disconnect on a failed send under ASGI 2.4, and a followed log may
    send nothing for hours: this response listens for `http.disconnect` itself, then closes the
    stream (and with it the files it reads).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as task_group:

                async def stream_then_stop() -> None:
                    await self.stream_response(send)
                    task_group.cancel_scope.cancel()

                task_group.start_soon(stream_then_stop)
                await self.listen_for_disconnect(receive)
                task_group.cancel_scope.cancel()
        except* OSError:
            pass  # the client went away mid-send
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


async def get_logs(request: Request) -> Response:
    """GET /logs: 400 for a bad boolean, 404 `service log not found`, else 200 text/plain."""
    follow = go_bool(request, "follow")
    no_engines = go_bool(request, "no-engines")
    runner: ModelRunner = request.app.state.runner
    lines = runner.logs(follow=follow, engines=not no_engines)
    return FollowedLogResponse(lines, media_type="text/plain", headers={"X-Accel-Buffering": "no"})


def routes() -> list[BaseRoute]:
    """The /logs route."""
    return [Route("/logs", get_logs, methods=["GET"])]
