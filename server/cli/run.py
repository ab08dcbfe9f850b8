"""`modelrunner run`: one prompt streamed to stdout, or an interactive session (chat_session)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

from modelrunner.server.cli.chat_session import ChatSession, LineReader, default_history
from modelrunner.server.cli.client import ApiClient, CliError, ServerError


def read_piped_stdin(stdin: TextIO) -> str | None:
    """All of stdin when it is not a terminal (DMR appends it to the prompt), else None."""
    if stdin.isatty():
        return None
    return stdin.read()


def stream_answer(
    client: ApiClient,
    model: str,
    messages: list[dict[str, Any]],
    out: TextIO,
    options: Mapping[str, Any] | None = None,
) -> str:
    """Print the assistant's answer as it streams in, then a newline; returns the full text."""
    parts: list[str] = []
    body = {**(options or {}), "model": model, "messages": list(messages)}
    with client.stream_chat(body) as deltas:
        for delta in deltas:
            parts.append(delta)
            out.write(delta)
            out.flush()
    out.write("\n")
    out.flush()
    return "".join(parts)


def ensure_model(client: ApiClient, model: str) -> None:
    """Pull the model first when it is not stored, as DMR's `run` does; progress on stderr."""
    try:
        client.get_model(model)
    except ServerError as error:
        if error.status != 404:
            raise
    else:
        return
    from modelrunner.core.references import parse_reference
    from modelrunner.server.cli.transfer import pull

    print(f"Unable to find model '{model}' locally. Pulling from the server.", file=sys.stderr)
    pull(client, parse_reference(model).normalized, out=sys.stderr)


def preload_in_background(client: ApiClient, model: str) -> threading.Thread:
    """Load the model while the user types the first message (DMR's X-Preload-Only request);
    a failure is left for the first message to report."""

    def preload() -> None:
        body = {"model": model, "messages": []}
        with contextlib.suppress(CliError):
            client.request(
                "POST", "/engines/v1/chat/completions", json=body,
                headers={"X-Preload-Only": "true"}, timeout=None,
            )  # fmt: skip

    thread = threading.Thread(target=preload, name="preload", daemon=True)
    thread.start()
    return thread


def run_model(
    client: ApiClient,
    model: str,
    prompt: str,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    system_prompt: str = "",
    options: Mapping[str, Any] | None = None,
) -> int:
    """Answer `prompt` (plus piped stdin) once, or chat until EOF or /bye when there is none.

    A non-empty `system_prompt` is sent first in every request (settings.system_prompt), and
    `options` (settings.chat_options: temperature, max_tokens, ...) go with each request.
    """
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if out is None else out
    ensure_model(client, model)
    piped = read_piped_stdin(stdin)
    if piped is not None:
        if piped.strip():
            prompt = f"{prompt}\n\n{piped}" if prompt else piped
        if not prompt.strip():
            raise CliError("nothing to send: the prompt and stdin are empty")
    if prompt:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        stream_answer(client, model, [*system, {"role": "user", "content": prompt}], out, options)
        return 0
    preload_in_background(client, model)
    reader = LineReader(stdin, out, default_history() if stdin is sys.stdin else None)

    def answer(messages: list[dict[str, Any]]) -> str:
        return stream_answer(client, model, messages, out, options)

    return ChatSession(client, model, reader, answer, system_prompt).run()
