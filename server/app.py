"""The HTTP API: a Starlette app around one ModelRunner; its lifespan starts and stops it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import metadata
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.core.errors import CoreError
from modelrunner.server import (
    anthropic_routes,
    engines_routes,
    housekeeping_routes,
    logs_routes,
    models_routes,
    ollama_routes,
    openai_routes,
    responses_routes,
)
from modelrunner.server.cors import CrossOriginPolicy
from modelrunner.server.errors import (
    ApiError,
    handle_api_error,
    handle_core_error,
    handle_http_exception,
    handle_unexpected,
)

if TYPE_CHECKING:
    from modelrunner.core.runner import ModelRunner

ROOT_TEXT = "Docker Model Runner is running"
"""What GET / answers, word for word like DMR, so DMR clients' liveness checks pass."""


def version() -> str:
    """The installed modelrunner version ("dev" when running from an uninstalled tree)."""
    try:
        return metadata.version("modelrunner")
    except metadata.PackageNotFoundError:
        return "dev"


async def root(request: Request) -> Response:
    """GET /."""
    return PlainTextResponse(ROOT_TEXT)


async def get_version(request: Request) -> Response:
    """GET /version."""
    return JSONResponse({"version": version()})


def build_app(runner: ModelRunner, *, manage_runner: bool = True) -> Starlette:
    """The API app serving `runner`.

    Args:
        runner: The facade every route calls; kept on `app.state.runner`.
        manage_runner: Start the runner when the app starts and stop it when the app stops
            (turn off when the caller owns the runner's lifetime, e.g. a TUI hosting the API).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_runner:
            await runner.start()
        try:
            yield
        finally:
            if manage_runner:
                await runner.stop()

    table: list[BaseRoute] = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/version", get_version, methods=["GET"]),
        *logs_routes.routes(),
        *housekeeping_routes.routes(),  # before /models/{name:path}
        *models_routes.routes(),
        *openai_routes.routes(),
        *ollama_routes.routes(),
        *anthropic_routes.routes(),
        *responses_routes.routes(),
        *engines_routes.routes(runner.settings),
    ]
    app = Starlette(
        routes=table,
        lifespan=lifespan,
        middleware=[Middleware(CrossOriginPolicy, extra_origins=runner.settings.origins)],
        exception_handlers={
            CoreError: handle_core_error,
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )
    app.state.runner = runner
    return app
