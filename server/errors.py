"""Errors as HTTP responses: plain text like DMR on /models, the OpenAI envelope on /v1 routes,
Ollama's `{"error": "…"}` on /api/ routes, Anthropic's `{"type": "error", …}` on /anthropic/."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from modelrunner.core.errors import CoreError, ModelNotFound

logger = logging.getLogger(__name__)

OPENAI_PREFIXES = ("/v1/", "/engines/")
"""Paths whose errors use the OpenAI envelope, so OpenAI SDKs raise typed errors."""

RESPONSES_PREFIXES = ("/responses", "/engines/responses")
"""DMR's Responses API paths outside /v1/, which use the OpenAI envelope too."""

OLLAMA_PREFIX = "/api/"
"""Paths whose errors are Ollama's `{"error": "…"}`, which Ollama clients show."""

ANTHROPIC_PREFIX = "/anthropic/"
"""Paths whose errors are Anthropic's `{"type": "error", "error": {"type", "message"}}`, which
Anthropic SDKs turn into typed exceptions."""

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A request the server refuses on its own, before the core is asked anything."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")


def wants_openai_errors(path: str) -> bool:
    """Whether errors on this path use the OpenAI envelope rather than plain text.

    DMR's engine admin routes (/engines/status, ps, unload, [{backend}/]_configure) answer
    plain text; only the OpenAI routes under /engines/ use the envelope.
    """
    if any(path == prefix or path.startswith(f"{prefix}/") for prefix in RESPONSES_PREFIXES):
        return True
    if path.startswith("/engines/") and "/v1/" not in path + "/":
        return False
    return path == "/v1" or path.startswith(OPENAI_PREFIXES)


def plain_error(status: int, message: str) -> Response:
    """A Go `http.Error`-style answer: the message and a newline, as text."""
    return PlainTextResponse(
        message + "\n", status_code=status, headers={"X-Content-Type-Options": "nosniff"}
    )


def openai_error(status: int, message: str, code: str | None = None) -> Response:
    """The OpenAI error envelope `{"error": {"message", "type", "param", "code"}}`."""
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {
        "error": {
            "message": message,
            "type": kind,
            "param": None,
            "code": code or _CODES.get(status, "error"),
        }
    }
    return JSONResponse(body, status_code=status)


def anthropic_error(status: int, message: str) -> Response:
    """Anthropic's error body; the type follows the status (api_error for other server faults)."""
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status)


def error_response(status: int, message: str, *, openai: bool, code: str | None = None) -> Response:
    """An error in the format the route's clients expect."""
    return openai_error(status, message, code) if openai else plain_error(status, message)


def path_error(path: str, status: int, message: str, code: str | None = None) -> Response:
    """An error in the format clients of `path` expect: Ollama's, Anthropic's, OpenAI's or plain
    text."""
    if path.startswith(OLLAMA_PREFIX):
        return JSONResponse({"error": message}, status_code=status)
    if path.startswith(ANTHROPIC_PREFIX):
        return anthropic_error(status, message)
    return error_response(status, message, openai=wants_openai_errors(path), code=code)


def core_error_response(error: CoreError, *, openai: bool) -> Response:
    """The answer for an error the core raised on purpose."""
    code = "model_not_found" if isinstance(error, ModelNotFound) else None
    if error.status >= 500:
        logger.warning("%s: %s", type(error).__name__, error.message)
    return error_response(error.status, error.message, openai=openai, code=code)


async def handle_core_error(request: Request, error: Exception) -> Response:
    """Starlette exception handler for CoreError."""
    assert isinstance(error, CoreError)
    if request.url.path.startswith((OLLAMA_PREFIX, ANTHROPIC_PREFIX)):
        if error.status >= 500:
            logger.warning("%s: %s", type(error).__name__, error.message)
        return path_error(request.url.path, error.status, error.message)
    return core_error_response(error, openai=wants_openai_errors(request.url.path))


async def handle_api_error(request: Request, error: Exception) -> Response:
    """Starlette exception handler for ApiError."""
    assert isinstance(error, ApiError)
    return path_error(request.url.path, error.status, error.message, error.code)


async def handle_http_exception(request: Request, error: Exception) -> Response:
    """Starlette's own 404/405 with a message that says what was wrong."""
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif error.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    response = path_error(request.url.path, error.status_code, message)
    if error.headers:
        response.headers.update(error.headers)
    return response


async def handle_unexpected(request: Request, error: Exception) -> Response:
    """Anything else: a short 500; Starlette re-raises it, so uvicorn logs the traceback."""
    message = f"internal error: {type(error).__name__}"
    return path_error(request.url.path, 500, message)
