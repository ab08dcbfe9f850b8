"""GET /logs?follow=bool&no-engines=bool: the service and engine logs, merged, as text (DMR's)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelrunner.server.errors import ApiError
from modelrunner.server.streaming import ListeningStreamingResponse

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


async def get_logs(request: Request) -> Response:
    """GET /logs: 400 for a bad boolean, 404 `service log not found`, else 200 text/plain."""
    follow = go_bool(request, "follow")
    no_engines = go_bool(request, "no-engines")
    runner: ModelRunner = request.app.state.runner
    lines = runner.logs(follow=follow, engines=not no_engines)
    return ListeningStreamingResponse(
        lines, media_type="text/plain", headers={"X-Accel-Buffering": "no"}
    )


def routes() -> list[BaseRoute]:
    """The /logs route."""
    return [Route("/logs", get_logs, methods=["GET"])]
