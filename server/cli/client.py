"""The CLI's HTTP client of the modelrunner API: endpoint, errors in words, SSE reading."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any
from urllib.parse import quote

import httpx

from modelrunner.core.errors import InvalidReference
from modelrunner.core.references import looks_like_id, parse_reference

DEFAULT_HOST = "http://localhost:12434"
"""DMR's Docker Engine endpoint, where `modelrunner-tui --headless` listens by default."""

_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
_STREAM_TIMEOUT = httpx.Timeout(None, connect=5.0)


class CliError(Exception):
    """Something the CLI reports to the user and exits 1 for."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotRunning(CliError):
    """Nothing answers at the configured host."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"modelrunner is not running at {host}. Start it with `modelrunner-tui --headless` "
            "(or open `modelrunner-tui`), or point MODEL_RUNNER_HOST at a running server."
        )
        self.host = host


class ServerError(CliError):
    """The server answered with an error status; the message is taken from its body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resolve_host(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The API endpoint: --host, MODEL_RUNNER_HOST, the settings file, or DMR's default."""
    env = os.environ if environ is None else environ
    host = (explicit or env.get("MODEL_RUNNER_HOST", "")).strip()
    if not host:
        try:
            from modelrunner.core.settings import Settings

            host = Settings.load(env).runner_host
        except Exception:  # a broken config file must not stop the client from trying the default
            host = DEFAULT_HOST
    if "://" not in host:
        host = f"http://{host}"
    return host.rstrip("/")


def model_path(name: str) -> str:
    """A model name as a URL path segment: slashes kept (routes capture them), the rest quoted.

    The name is checked first: an HTTP client would quietly drop a `..` segment from the path and
    ask for another model, so a malformed name never leaves this process.

    Raises:
        CliError: The name is not a model reference, ID or ID prefix.
    """
    name = name.strip()
    if not looks_like_id(name):
        try:
            parse_reference(name)
        except InvalidReference as error:
            raise CliError(error.message) from error
    return quote(name, safe="/:@")


def error_message(response: httpx.Response) -> str:
    """The message in an error body: the OpenAI envelope's, or the plain text DMR sends."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text or f"HTTP {response.status_code} {response.reason_phrase}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return text


def user_agent() -> str:
    try:
        version = metadata.version("modelrunner")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"modelrunner-cli/{version}"


class ApiClient:
    """Blocking calls to one modelrunner server (http://host:port or unix:///path.sock)."""

    def __init__(self, host: str, transport: httpx.BaseTransport | None = None) -> None:
        self.host = host
        base_url = host
        if host.startswith("unix://"):
            transport = transport or httpx.HTTPTransport(uds=host.removeprefix("unix://"))
            base_url = "http://localhost"
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            timeout=_TIMEOUT,
            headers={"User-Agent": user_agent()},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; error statuses raise ServerError, a dead server raises NotRunning."""
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise NotRunning(self.host) from error
        except httpx.TransportError as error:
            raise CliError(f"lost the connection to {self.host}: {error}") from error
        if response.status_code >= 400:
            raise ServerError(response.status_code, error_message(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def list_models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = self.json("GET", "/models")
        return models

    def get_model(self, name: str) -> dict[str, Any]:
        model: dict[str, Any] = self.json("GET", f"/models/{model_path(name)}")
        return model

    def openai_models(self) -> dict[str, Any]:
        listing: dict[str, Any] = self.json("GET", "/engines/v1/models")
        return listing

    def openai_model(self, name: str) -> dict[str, Any]:
        model: dict[str, Any] = self.json("GET", f"/engines/v1/models/{model_path(name)}")
        return model

    def tag(self, source: str, repo: str, tag: str) -> dict[str, Any]:
        params = {"repo": repo, "tag": tag}
        answer: dict[str, Any] = self.json(
            "POST", f"/models/{model_path(source)}/tag", params=params
        )
        return answer

    def remove(self, name: str, *, force: bool) -> list[dict[str, str]]:
        params = {"force": "true" if force else "false"}
        actions: list[dict[str, str]] = self.json(
            "DELETE", f"/models/{model_path(name)}", params=params
        )
        return actions

    def load(self, archive: Iterable[bytes]) -> str:
        """POST /models/load with a DMR export tarball streamed from `archive`; returns the ID."""
        answer = self.json(
            "POST",
            "/models/load",
            content=archive,
            headers={"Content-Type": "application/x-tar"},
            timeout=_STREAM_TIMEOUT,
        )
        return str(answer["id"])

    def stream_progress(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """POST to a progress route (pull, push) and yield DMR's progress messages as they come."""
        headers = {"Accept": "application/json"}
        try:
            with self._http.stream(
                "POST", path, json=body, headers=headers, timeout=_STREAM_TIMEOUT
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServerError(response.status_code, error_message(response))
                for line in response.iter_lines():
                    if line.strip():
                        message: dict[str, Any] = json.loads(line)
                        yield message
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise NotRunning(self.host) from error
        except httpx.TransportError as error:
            raise CliError(f"lost the connection to {self.host}: {error}") from error

    def version(self) -> str:
        return str(self.json("GET", "/version").get("version", "unknown"))

    @contextmanager
    def stream_chat(self, payload: Mapping[str, Any]) -> Iterator[Iterator[str]]:
        """POST a chat completion with stream=true; yields an iterator of content deltas."""
        body = {**payload, "stream": True}
        try:
            with self._http.stream(
                "POST", "/engines/v1/chat/completions", json=body, timeout=_STREAM_TIMEOUT
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServerError(response.status_code, error_message(response))
                yield _content_deltas(response)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise NotRunning(self.host) from error
        except httpx.TransportError as error:
            raise CliError(f"lost the connection to {self.host}: {error}") from error


def _content_deltas(response: httpx.Response) -> Iterator[str]:
    """Content deltas of an SSE chat stream (or the content of a non-streamed JSON answer)."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        body = json.loads(response.read())
        for choice in body.get("choices") or ():
            content = (choice.get("message") or {}).get("content")
            if content:
                yield content
        return
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if isinstance(chunk.get("error"), dict):
            raise ServerError(500, str(chunk["error"].get("message", chunk["error"])))
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield content
