"""`modelrunner run`: one prompt streamed to stdout, or a simple `> ` chat loop."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from modelrunner.server.cli.client import ApiClient, CliError, ServerError

EXIT_COMMANDS = ("/bye", "/exit")


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
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if prompt:
        stream_answer(client, model, [*system, {"role": "user", "content": prompt}], out, options)
        return 0
    return chat_loop(client, model, stdin, out, system, options)


def chat_loop(
    client: ApiClient,
    model: str,
    stdin: TextIO,
    out: TextIO,
    system: list[dict[str, Any]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> int:
    """A line-at-a-time conversation; the history is kept in memory for the session."""
    messages: list[dict[str, Any]] = list(system or [])
    out.write(f"Chatting with {model}. Type /bye or press Ctrl-D to leave.\n")
    while True:
        out.write("> ")
        out.flush()
        line = stdin.readline()
        if not line:
            out.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in EXIT_COMMANDS:
            return 0
        messages.append({"role": "user", "content": text})
        try:
            answer = stream_answer(client, model, messages, out, options)
        except KeyboardInterrupt:
            messages.pop()
            out.write("\n")
            continue
        except ServerError as error:  # e.g. the context is full: say so and keep the session
            messages.pop()
            print(f"modelrunner: {error.message}", file=sys.stderr)
            continue
        messages.append({"role": "assistant", "content": answer})
