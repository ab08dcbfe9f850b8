"""Request bodies: read with a size limit, parsed as JSON with every failure a 400."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from modelrunner.server.errors import ApiError

MAX_BODY_BYTES = 10 * 1024 * 1024
"""DMR's limit on an inference request body (10 MiB); other bodies are held to it too."""

NESTED_TOO_DEEPLY = "invalid request: the body's JSON is nested too deeply"
"""What a body gets that Python's JSON parser cannot recurse through."""


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body, refusing one over `limit` bytes without reading it all."""
    too_large = ApiError(413, f"request too large: the body must be at most {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body: 400 when it is not JSON (NaN and Infinity are not either) or
    nests deeper than Python's parser goes."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, f"invalid request: the body is not valid JSON ({error})") from None
    except RecursionError:
        raise ApiError(400, NESTED_TOO_DEEPLY) from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body's JSON object (400 when it is not JSON or not an object)."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid request: the body must be a JSON object")
    return body


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")
