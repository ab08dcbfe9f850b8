"""The CLI's HTTP client of the modelrunner API: endpoint, errors in words, SSE reading."""

from __future__ import annotations

import json
import os
import socket
import ssl
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

    def __init__(self, host: str, reason: str = "connection refused") -> None:
        super().__init__(
            f"cannot connect to modelrunner at {host} ({reason}{_default_port_note(host)}). "
            "Start it with `modelrunner-tui --headless` (or open `modelrunner-tui`), "
            "or set MODEL_RUNNER_HOST to where it runs."
        )
        self.host = host


class ServerError(CliError):
    """The server answered with an error status; the message is taken from its body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotModelRunner(CliError):
    """Something answers at the host, but not as a modelrunner server would."""

    def __init__(self, host: str, request: str, what: str) -> None:
        super().__init__(
            f"{host} does not answer like a modelrunner server ({request} answered {what}); "
            "check MODEL_RUNNER_HOST (or --host)"
        )


def _default_port_note(host: str) -> str:
    """For http://host without a port: which port was tried instead of DMR's 12434."""
    if host.startswith("unix://"):
        return ""
    url = httpx.URL(host)
    if url.port is not None:
        return ""
    port = 443 if url.scheme == "https" else 80
    return f"; no port given, so port {port} was tried, and the server listens on 12434 by default"


_USE = f"use http://HOST:PORT, e.g. {DEFAULT_HOST}, or unix:///path/to.sock"


def resolve_host(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The API endpoint: --host, MODEL_RUNNER_HOST, the settings file, or DMR's default.

    Raises:
        CliError: The chosen value is not an http(s):// or unix:// URL of a server's root.
    """
    env = os.environ if environ is None else environ
    raw = (explicit or env.get("MODEL_RUNNER_HOST", "")).strip()
    label = f"--host {raw}" if explicit else f"MODEL_RUNNER_HOST={raw}"
    if not raw:
        label = "runner_host in the config file"
        try:
            from modelrunner.core.settings import Settings

            raw = Settings.load(env).runner_host
        except Exception:  # a broken config file must not stop the client from trying the default
            raw = DEFAULT_HOST
    host = raw if "://" in raw else f"http://{raw}"
    problem = host_problem(host)
    if problem:
        raise CliError(f"{label} is not a server URL: {problem}")
    return host.rstrip("/")


def host_problem(host: str) -> str | None:
    """Why `host` cannot be the CLI's endpoint, and what to write instead; None when it can."""
    scheme, _, rest = host.partition("://")
    if scheme.lower() == "unix":
        return None if rest else "it has no socket path (e.g. unix:///run/modelrunner.sock)"
    if scheme.lower() not in ("http", "https"):
        return f"the scheme '{scheme}' is not supported ({_USE})"
    try:
        url = httpx.URL(host)
    except httpx.InvalidURL as error:
        return f"it is not a valid URL: {error} ({_USE})"
    if not url.host:
        return f"it has no host name ({_USE})"
    if url.port is not None and not 0 < url.port < 65536:
        return f"port {url.port} is out of range 1-65535 ({_USE})"
    if url.path not in ("", "/") or url.query or url.fragment:
        root = f"{url.scheme}://{url.netloc.decode('ascii')}"
        return f"use the server's root URL without a path, {root} (the CLI adds /models, ...)"
    return None


def model_path(name: str) -> str:
    """A model name as a URL path segment: slashes kept (routes capture them), the rest quoted.

    The name is checked first: an HTTP client would quietly drop a `..` segment from the path and
    ask for another model, so a malformed name never leaves this process.

    Raises:
        CliError: The name is not a model reference, ID or ID prefix.
    """
    name = name.strip()
    if name.lower().startswith("sha256:") and not looks_like_id(name):
        raise CliError(
            f"invalid model ID {name!r}: an ID is sha256: and 4 to 64 lower-case hex digits"
        )
    if not looks_like_id(name):
        try:
            parse_reference(name)
        except InvalidReference as error:
            raise CliError(error.message) from error
    return quote(name, safe="/:@")


def error_message(response: httpx.Response) -> str:
    """The message in an error body: the OpenAI envelope's, or the plain text DMR sends."""
    text = response.text.strip()
    status = f"HTTP {response.status_code} {response.reason_phrase}"
    if text.startswith("<") or "html" in response.headers.get("content-type", ""):
        return f"{status} (an HTML page)"  # a proxy's, not the server's words
    try:
        body = json.loads(text)
    except ValueError:
        return text or status
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
        except httpx.TransportError as error:
            raise self.transport_error(error) from error
        if response.status_code >= 400:
            raise ServerError(response.status_code, error_message(response))
        return response

    def transport_error(self, error: httpx.TransportError) -> CliError:
        """What went wrong on the way to the server, in words naming the host."""
        causes = _causes(error)
        if not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            return CliError(f"lost the connection to {self.host}: {error}")
        if any(isinstance(cause, socket.gaierror) for cause in causes):
            name = httpx.URL(self.host).host
            return CliError(
                f"cannot resolve the host name {name!r} of {self.host}; "
                "check MODEL_RUNNER_HOST (or --host)"
            )
        if tls := next((cause for cause in causes if isinstance(cause, ssl.SSLError)), None):
            plain = "http://" + self.host.partition("://")[2]
            return CliError(
                f"TLS handshake with {self.host} failed ({tls.reason or tls}); "
                f"`modelrunner-tui --headless` serves plain HTTP: try {plain}"
            )
        if isinstance(error, httpx.ConnectTimeout):
            return NotRunning(self.host, "no answer within 5 seconds")
        os_error = next((c for c in reversed(causes) if isinstance(c, OSError)), None)
        reason = os_error.strerror if os_error is not None and os_error.strerror else None
        return NotRunning(self.host, reason.lower() if reason else "connection refused")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as error:
            raise NotModelRunner(self.host, f"{method} {path}", "something not JSON") from error

    def json_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A JSON object answer; anything else means another kind of server."""
        answer = self.json(method, path, **kwargs)
        if not isinstance(answer, dict):
            raise NotModelRunner(self.host, f"{method} {path}", _kind(answer))
        return answer

    def json_list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        """A JSON list of objects; anything else means another kind of server."""
        answer = self.json(method, path, **kwargs)
        if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
            raise NotModelRunner(self.host, f"{method} {path}", _kind(answer))
        return answer

    def list_models(self) -> list[dict[str, Any]]:
        try:
            return self.json_list("GET", "/models")
        except ServerError as error:
            if error.status in (404, 405):  # every modelrunner serves GET /models
                raise NotModelRunner(
                    self.host, "GET /models", f"{error.status}: {error.message}"
                ) from error
            raise

    def get_model(self, name: str) -> dict[str, Any]:
        path = model_path(name)
        if path.rpartition("/")[2] == "export":  # GET /models/<x>/export exports <x>: name it all
            path = parse_reference(name).normalized
        return self.json_object("GET", f"/models/{path}")

    def openai_models(self) -> dict[str, Any]:
        return self.json_object("GET", "/engines/v1/models")

    def openai_model(self, name: str) -> dict[str, Any]:
        return self.json_object("GET", f"/engines/v1/models/{model_path(name)}")

    def tag(self, source: str, repo: str, tag: str) -> dict[str, Any]:
        params = {"repo": repo, "tag": tag}
        return self.json_object("POST", f"/models/{model_path(source)}/tag", params=params)

    def remove(self, name: str, *, force: bool) -> list[dict[str, Any]]:
        params = {"force": "true" if force else "false"}
        path = model_path(name)
        if path == "purge":  # DELETE /models/purge wipes the store: name the model in full
            path = parse_reference(name).normalized
        return self.json_list("DELETE", f"/models/{path}", params=params)

    def purge(self) -> None:
        """DELETE /models/purge: every model goes."""
        self.request("DELETE", "/models/purge")

    def repackage(self, source: str, target: str, context_size: int) -> dict[str, Any]:
        """POST /models/{source}/repackage: the source with a new context size, tagged target."""
        body = {"target": target, "context_size": context_size}
        return self.json_object("POST", f"/models/{model_path(source)}/repackage", json=body)

    @contextmanager
    def export(self, name: str) -> Iterator[Iterator[bytes]]:
        """GET /models/{name}/export: DMR's export tarball of a model, its bytes as they come."""
        with self._streaming("GET", f"/models/{model_path(name)}/export") as response:
            yield response.iter_bytes()

    def stream_logs(self, *, follow: bool, engines: bool) -> Iterator[bytes]:
        """GET /logs: the merged logs' bytes as they come (until the server ends the stream)."""
        params = {"follow": "true"} if follow else {}
        if not engines:
            params["no-engines"] = "true"
        with self._streaming("GET", "/logs", params=params) as response:
            yield from response.iter_raw()

    def load(self, archive: Iterable[bytes]) -> str:
        """POST /models/load with a DMR export tarball streamed from `archive`; returns the ID."""
        answer = self.json_object(
            "POST",
            "/models/load",
            content=archive,
            headers={"Content-Type": "application/x-tar"},
            timeout=_STREAM_TIMEOUT,
        )
        if not isinstance(answer.get("id"), str):
            raise NotModelRunner(self.host, "POST /models/load", "no model ID")
        return str(answer["id"])

    def stream_progress(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """POST to a progress route (pull, push) and yield DMR's progress messages as they come."""
        headers = {"Accept": "application/json"}
        with self._streaming("POST", path, json=body, headers=headers) as response:
            for line in response.iter_lines():
                if line.strip():
                    message: dict[str, Any] = json.loads(line)
                    yield message

    def version(self) -> str:
        return str(self.json_object("GET", "/version").get("version", "unknown"))

    @contextmanager
    def stream_chat(self, payload: Mapping[str, Any]) -> Iterator[Iterator[str]]:
        """POST a chat completion with stream=true; yields an iterator of content deltas."""
        body = {**payload, "stream": True}
        with self._streaming("POST", "/engines/v1/chat/completions", json=body) as response:
            yield _content_deltas(response)

    @contextmanager
    def _streaming(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed request whose body is read as it comes; error statuses raise ServerError
        (with the body's message), a dead server the transport error in words."""
        try:
            with self._http.stream(method, path, timeout=_STREAM_TIMEOUT, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServerError(response.status_code, error_message(response))
                yield response
        except httpx.TransportError as error:
            raise self.transport_error(error) from error


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and what caused it, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _kind(value: object) -> str:
    """A JSON value's kind, for saying what came instead of the expected answer."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON list" + (
            "" if all(isinstance(v, dict) for v in value) else " of non-objects"
        )
    return f"JSON {type(value).__name__}"


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
