"""HTTP to running llama-servers over their Unix sockets (aiohttp), streamed as bytes arrive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDictProxy

from modelrunner.core.errors import CoreError, InvalidInput, RunnerFailed, RunnerGone

# Hop-by-hop and framing headers that must not be forwarded to the upstream as-is.
_DROP_REQUEST_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "te"}
)


class SocketRunner(Protocol):
    """Anything serving HTTP on a Unix socket (LlamaServer has these)."""

    @property
    def socket_path(self) -> Path: ...
    @property
    def reference(self) -> str: ...


class UpstreamResponse:
    """A response from a runner whose body has not been read yet."""

    def __init__(self, response: aiohttp.ClientResponse, reference: str) -> None:
        self._response = response
        self._reference = reference
        self.status = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self.on_close: Callable[[], None] | None = None
        """Called once when the response is closed (the facade releases the runner's slot)."""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield body bytes as they arrive, without buffering the whole body."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as error:
            raise RunnerFailed(
                f"llama-server for {self._reference} broke off its response: {error}"
            ) from error

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.iter_chunks()])

    async def aclose(self) -> None:
        """Release the connection (closing it if the body was not read to the end)."""
        self._response.release()
        self._response.close()
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()


class UpstreamClient:
    """One aiohttp session per runner socket, shared by every request to that runner."""

    def __init__(self, connect_timeout: float = 10.0) -> None:
        self._sessions: dict[Path, aiohttp.ClientSession] = {}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)

    def _session(self, socket_path: Path) -> aiohttp.ClientSession:
        session = self._sessions.get(socket_path)
        if session is None or session.closed:
            # llama-server drops idle connections after 5 s: let ours go first, so a request
            # never lands on one it is closing.
            connector = aiohttp.UnixConnector(path=str(socket_path), keepalive_timeout=4.0)
            session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False
            )
            self._sessions[socket_path] = session
        return session

    async def request(
        self,
        runner: SocketRunner,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """Send one request to `runner`; the caller reads the body and must call aclose().

        Raises:
            RunnerFailed: The runner does not answer.
        """
        forwarded = {
            name: value
            for name, value in (headers or {}).items()
            if name.lower() not in _DROP_REQUEST_HEADERS
        }
        if _streamed(body):
            # llama-server ends the connection after a streamed answer; saying so up front keeps
            # aiohttp from pooling a connection the next request would find dead.
            forwarded["Connection"] = "close"
        session = self._session(runner.socket_path)
        url = f"http://localhost{path}"
        try:
            response = await session.request(method, url, data=body or None, headers=forwarded)
        except (aiohttp.ServerDisconnectedError, RuntimeError) as error:
            # RuntimeError: aiohttp's "Session is closed", when the runner was just stopped.
            raise RunnerGone(
                f"llama-server for {runner.reference} stopped before it answered "
                "(it was unloaded, removed or crashed); try again"
            ) from error
        except aiohttp.ClientError as error:
            raise RunnerFailed(
                f"llama-server for {runner.reference} is not answering: {error}"
            ) from error
        return UpstreamResponse(response, runner.reference)

    async def chat_deltas(
        self, runner: SocketRunner, payload: Mapping[str, Any]
    ) -> AsyncIterator[str]:
        """Post a streaming chat completion and yield the text of each content delta.

        Raises:
            InvalidInput: The runner rejected the request (4xx, or a 4xx error event).
            RunnerFailed: The runner failed (5xx, or an error event mid-stream).
        """
        body = json.dumps({**payload, "stream": True}).encode()
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        response = await self.request(runner, "POST", "/v1/chat/completions", body, headers)
        try:
            if response.status != 200:
                raise upstream_error(response.status, await response.read(), runner.reference)
            async for event in sse_data(response.iter_chunks()):
                if event == "[DONE]":
                    return
                try:
                    chunk = json.loads(event)
                except ValueError as bad_json:
                    raise RunnerFailed(
                        f"llama-server for {runner.reference} sent a malformed event: {event[:200]}"
                    ) from bad_json
                if "error" in chunk:
                    raise upstream_error(
                        _error_status(chunk["error"]), json.dumps(chunk).encode(), runner.reference
                    )
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield content
        finally:
            await response.aclose()

    async def forget(self, runner: SocketRunner) -> None:
        """Close the session to a runner that stopped."""
        session = self._sessions.pop(runner.socket_path, None)
        if session is not None:
            await session.close()

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def _streamed(body: bytes) -> bool:
    """Whether an OpenAI request body asks for a streamed (SSE) answer."""
    if b'"stream"' not in body:
        return False
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("stream") is True


def upstream_error(status: int, body: bytes, reference: str) -> CoreError:
    """Turn a runner's error answer into InvalidInput (4xx) or RunnerFailed, keeping its message."""
    message = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(message)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(error, str):
            message = error
    if 400 <= status < 500:
        return InvalidInput(message or f"llama-server rejected the request ({status})")
    return RunnerFailed(f"llama-server for {reference} failed ({status}): {message}")


def _error_status(error: object) -> int:
    """The HTTP-like code of an error event (llama-server puts it in error.code)."""
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Yield the data of each server-sent event (multi-line data joined with newlines)."""
    buffer = b""
    data: list[str] = []
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
    if buffer.strip().startswith(b"data:"):
        data.append(buffer.strip().decode("utf-8", "replace")[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)
