"""DMR's engine routes: /engines/status, ps, unload, _configure, and GET /metrics.

Errors on these answer plain text, as DMR's do (server.errors.wants_openai_errors); a
`_configure` that fails validation is a 400 with the reason (DMR answers 500).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.core.inference.configure import format_keep_alive, parse_configure_request
from modelrunner.core.inference.metrics import CONTENT_TYPE
from modelrunner.server.errors import ApiError
from modelrunner.server.openai_routes import BACKENDS
from modelrunner.server.request_bodies import parse_json, read_body

if TYPE_CHECKING:
    from collections.abc import Sequence

    from modelrunner.core.inference.configure import ConfigEntry, ConfigureRequest
    from modelrunner.core.inference.pool import RunnerInfo
    from modelrunner.core.settings import Settings

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero time, which DMR's ps shows as last_used of a runner in use."""

IN_USE_STATES = frozenset({"starting", "busy"})
LOADING_STATES = frozenset({"starting"})


class EngineFacade(Protocol):
    """The ModelRunner methods these routes call."""

    async def engine_status(self) -> str: ...
    def running(self) -> list[RunnerInfo]: ...
    async def unload(
        self, references: Sequence[str] | None = None, *, include_busy: bool = True
    ) -> int: ...
    async def forget_configs(self, references: Sequence[str] | None = None) -> int: ...
    async def configure(self, request: ConfigureRequest) -> None: ...
    async def configurations(self, reference: str | None = None) -> list[ConfigEntry]: ...
    async def metrics_text(self) -> str: ...


def _runner(request: Request) -> EngineFacade:
    runner: EngineFacade = request.app.state.runner
    return runner


def _check_backend(backend: str | None) -> None:
    if backend and backend not in BACKENDS:
        raise ApiError(404, f"backend not found: {backend!r} (available: llama.cpp)")


async def _json_body(request: Request) -> Any:
    body = await read_body(request)
    return parse_json(body) if body.strip() else {}


def go_time(unix_seconds: float | None) -> str:
    """RFC 3339 in UTC as Go marshals a time.Time ("2026-07-22T10:00:00.123456Z")."""
    if unix_seconds is None:
        return ZERO_TIME
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z").replace(".000000Z", "Z")


def ps_entry(info: RunnerInfo) -> dict[str, Any]:
    """One runner in DMR's /engines/ps shape, one per model and mode.

    `model_name` is the model's name as `/v1/models` lists it ("ai/smollm2:135M-Q4_1"); DMR
    shows whatever spelling the first request used.
    """
    state = info.state
    in_use = bool(getattr(info, "in_use", 0)) or state in IN_USE_STATES
    entry: dict[str, Any] = {
        "backend_name": "llama.cpp",
        "model_name": info.reference,
        "mode": info.mode,
        "last_used": ZERO_TIME if in_use else go_time(info.last_used),
    }
    if in_use:
        entry["in_use"] = True
    if getattr(info, "loading", False) or state in LOADING_STATES:
        entry["loading"] = True
    keep_alive = getattr(info, "keep_alive", None)
    if isinstance(keep_alive, int | float):
        entry["keep_alive"] = format_keep_alive(keep_alive)
    return entry


async def engines_status(request: Request) -> Response:
    """GET /engines/status."""
    return JSONResponse({"llama.cpp": await _runner(request).engine_status()})


async def engines_ps(request: Request) -> Response:
    """GET /engines/ps."""
    return JSONResponse([ps_entry(info) for info in _runner(request).running()])


async def engines_unload(request: Request) -> Response:
    """POST /engines/unload {"all", "backend", "models"} -> {"unloaded_runners": N}; a model's
    runners in every mode go (as DMR), each counted."""
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid request: the body must be a JSON object")
    backend = "" if body.get("backend") is None else body["backend"]
    models = [] if body.get("models") is None else body["models"]
    if not isinstance(backend, str):
        raise ApiError(400, f'invalid request: "backend" must be a string, not {backend!r}')
    if not isinstance(models, list):
        raise ApiError(400, f'invalid request: "models" must be a list of names, not {models!r}')
    if not all(isinstance(model, str) for model in models):
        raise ApiError(400, 'invalid request: "models" must hold model names')
    _check_backend(backend)
    runner = _runner(request)
    if not isinstance(body.get("all", False), bool):
        raise ApiError(400, 'invalid request: "all" must be true or false')
    if body.get("all") is True:
        count = await runner.unload(None, include_busy=False)
        await runner.forget_configs(None)
    elif models:
        count = await runner.unload(models, include_busy=False)
        if backend:  # DMR keeps stored configs unless the backend is named
            await runner.forget_configs(models)
    else:
        count = 0
    return JSONResponse({"unloaded_runners": count})


async def configure(request: Request) -> Response:
    """POST /engines[/{backend}]/_configure: 202, 400 invalid, 404 unknown, 409 runner busy.

    After a 202 the model's completion runner loads in the background (DMR's preload); the
    answer does not wait for it, and does not change if it fails.
    """
    backend = request.path_params.get("backend")
    _check_backend(backend)
    configure_request = parse_configure_request(await _json_body(request), backend or "llama.cpp")
    await _runner(request).configure(configure_request)
    return Response(status_code=202)


async def configurations(request: Request) -> Response:
    """GET /engines/_configure[?model=ref]: DMR's ModelConfigEntry list."""
    model = request.query_params.get("model") or None
    entries = await _runner(request).configurations(model)
    return JSONResponse([entry.to_api() for entry in entries])


async def metrics(request: Request) -> Response:
    """GET /metrics: every runner's llama.cpp series and ours, as one exposition."""
    text = await _runner(request).metrics_text()
    return Response(text, media_type=CONTENT_TYPE)


def routes(settings: Settings) -> list[BaseRoute]:
    """The engine routes; /metrics only when settings.disable_metrics is off."""
    table: list[BaseRoute] = [
        Route("/engines/status", engines_status, methods=["GET"]),
        Route("/engines/ps", engines_ps, methods=["GET"]),
        Route("/engines/unload", engines_unload, methods=["POST"]),
        Route("/engines/_configure", configure, methods=["POST"]),
        Route("/engines/_configure", configurations, methods=["GET"]),
        Route("/engines/{backend}/_configure", configure, methods=["POST"]),
    ]
    if not settings.disable_metrics:
        table.append(Route("/metrics", metrics, methods=["GET"]))
    return table
