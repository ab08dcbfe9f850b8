"""Which browser pages may call the API: DMR's origin check, with its port bug fixed.

A web page on any site can make the browser send requests to 127.0.0.1:12434; without a check it
could delete models or pull gigabytes. As DMR: a request carrying an `Origin` header is refused
with 403 `Origin not allowed` unless the origin is allowed; an allowed one gets
`Access-Control-Allow-Origin`, and its preflight (OPTIONS) a 204. Requests without an Origin
(curl, SDKs, the CLI) pass untouched, and `/`, `/version`, `/logs` and `/metrics` are not checked.

Allowed: http(s) pages on localhost, 127.0.0.1, 0.0.0.0 and [::1] on any port (DMR lists
`http://localhost:*` but compares it literally, so `http://localhost:3000` was refused), plus
DMR_ORIGINS: exact origins, `scheme://host:*` for every port of a host, or `*` for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNCHECKED_PATHS = frozenset({"/", "/version", "/logs", "/metrics"})
"""DMR applies no origin check to these."""

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "0.0.0.0", "::1"})


def origin_allowed(origin: str, extra: Sequence[str]) -> bool:
    """Whether a page of `origin` may call the API (see the module's docstring)."""
    if "*" in extra or origin in extra:
        return True
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.path or parts.query or not parts.hostname:
        return False
    if parts.hostname in LOCAL_HOSTS:
        return True
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return port is not None and f"{parts.scheme}://{host}:*" in extra


class CrossOriginPolicy:
    """ASGI middleware enforcing `origin_allowed`; a request without Origin costs nothing."""

    def __init__(self, app: ASGIApp, extra_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.extra_origins = tuple(extra_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCHECKED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_origin = headers.get(b"origin")
        if raw_origin is None:
            await self.app(scope, receive, send)
            return
        origin = raw_origin.decode("latin-1")
        if not origin_allowed(origin, self.extra_origins):
            await _answer(send, 403, b"Origin not allowed", [(b"content-type", b"text/plain")])
            return
        allow = [(b"access-control-allow-origin", raw_origin), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS":
            requested = headers.get(b"access-control-request-headers", b"*")
            await _answer(send, 204, b"", [
                *allow,
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-allow-methods", b"GET, POST, DELETE"),
                (b"access-control-allow-headers", requested),
                (b"access-control-max-age", b"600"),
            ])  # fmt: skip
            return

        async def send_allowed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *allow]}
            await send(message)

        await self.app(scope, receive, send_allowed)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *length]})
    await send({"type": "http.response.body", "body": body})
