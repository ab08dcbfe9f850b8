"""The interactive `run` session: multi-line blocks, slash commands, Ctrl-C and history."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrunner.server.cli.chat_session import ChatSession, LineReader
from modelrunner.server.cli.client import ApiClient, ServerError
from modelrunner.server.cli.run import preload_in_background


class ScriptedReader(LineReader):
    """Lines from a script; an Interrupt entry is Ctrl-C at that prompt."""

    Interrupt = object()

    def __init__(self, *lines: object) -> None:
        super().__init__(io.StringIO(), io.StringIO())
        self.lines = list(lines)
        self.prompts: list[str] = []

    def read(self, prompt: str) -> str | None:
        self.prompts.append(prompt)
        self.out.write(prompt)
        if not self.lines:
            return None
        line = self.lines.pop(0)
        if line is ScriptedReader.Interrupt:
            raise KeyboardInterrupt
        assert isinstance(line, str)
        return line


class ConfiguringClient(ApiClient):
    """Remembers the requests the session sends; a 409 when told to refuse."""

    def __init__(self, refuse: bool = False) -> None:
        super().__init__("http://127.0.0.1:9")
        self.requests: list[tuple[str, str, Any]] = []
        self.headers: list[Any] = []
        self.refuse = refuse

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.requests.append((method, path, kwargs.get("json")))
        self.headers.append(kwargs.get("headers"))
        if self.refuse:
            raise ServerError(409, "runner for ai/m is busy")
        return httpx.Response(202)


def session(
    reader: ScriptedReader, client: ApiClient | None = None
) -> tuple[ChatSession, list[list[dict[str, Any]]]]:
    """A session whose answers are "ok", and the message lists it was asked to answer."""
    asked: list[list[dict[str, Any]]] = []

    def answer(messages: list[dict[str, Any]]) -> str:
        asked.append(messages)
        return "ok"

    return ChatSession(client or ConfiguringClient(), "ai/m", reader, answer), asked


def said(reader: LineReader) -> str:
    out = reader.out
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def test_a_multi_line_block_is_one_message_and_may_start_with_a_slash() -> None:
    reader = ScriptedReader('"""first line', "/not a command", 'last"""', '"""one line"""')
    chat, asked = session(reader)
    assert chat.run() == 0
    assert [m[-1]["content"] for m in asked] == ["first line\n/not a command\nlast", "one line"]
    assert reader.prompts == ["> ", ". ", ". ", "> ", "> "]


def test_set_system_applies_to_every_later_turn_and_an_empty_one_clears_it() -> None:
    reader = ScriptedReader("/set system Be brief.", "hi", "/set system", "again")
    chat, asked = session(reader)
    chat.run()
    assert asked[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert asked[1][0] == {"role": "user", "content": "hi"}  # no system message any more
    assert "Set system message.\n" in said(reader)
    assert "Cleared system message.\n" in said(reader)


def test_set_num_ctx_configures_the_model() -> None:
    client = ConfiguringClient()
    reader = ScriptedReader("/set num_ctx 4096", "/set parameter num_ctx 2048", "/set num_ctx x")
    chat, _ = session(reader, client)
    chat.run()
    assert client.requests == [
        ("POST", "/engines/_configure", {"model": "ai/m", "context-size": 4096}),
        ("POST", "/engines/_configure", {"model": "ai/m", "context-size": 2048}),
    ]
    assert "Set num_ctx to 4096\n" in said(reader)
    assert "Usage: /set num_ctx <n> (a whole number of tokens)\n" in said(reader)


def test_a_refused_num_ctx_says_why_and_the_session_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reader = ScriptedReader("/set num_ctx 4096", "hi")
    chat, asked = session(reader, ConfiguringClient(refuse=True))
    assert chat.run() == 0
    assert "modelrunner: runner for ai/m is busy" in capsys.readouterr().err
    assert len(asked) == 1


def test_help_unknown_commands_and_bye() -> None:
    reader = ScriptedReader("/?", "/frobnicate now", "/bye", "never sent")
    chat, asked = session(reader)
    assert chat.run() == 0
    assert "/set num_ctx <n>" in said(reader)
    assert "Unknown command '/frobnicate'. Type /? for help\n" in said(reader)
    assert asked == []


def test_ctrl_c_at_the_prompt_says_how_to_leave_and_in_a_block_drops_it() -> None:
    interrupt = ScriptedReader.Interrupt
    reader = ScriptedReader(interrupt, '"""half', interrupt, "hello")
    chat, asked = session(reader)
    assert chat.run() == 0
    assert "\nUse Ctrl + d or /bye to exit.\n" in said(reader)
    assert [m[-1]["content"] for m in asked] == ["hello"]


def test_ctrl_c_during_an_answer_drops_that_turn() -> None:
    reader = ScriptedReader("first", "second")
    calls: list[int] = []

    def answer(messages: list[dict[str, Any]]) -> str:
        calls.append(len(messages))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return "ok"

    ChatSession(ConfiguringClient(), "ai/m", reader, answer).run()
    assert calls == [1, 1]  # the interrupted turn is not in the second request


def test_the_model_loads_in_the_background_while_the_user_types() -> None:
    client = ConfiguringClient()
    preload_in_background(client, "ai/m").join(timeout=10)
    assert client.requests == [
        ("POST", "/engines/v1/chat/completions", {"model": "ai/m", "messages": []})
    ]
    assert client.headers == [{"X-Preload-Only": "true"}]
    refused = ConfiguringClient(refuse=True)  # a failure is left to the first message
    preload_in_background(refused, "ai/m").join(timeout=10)
    assert len(refused.requests) == 1


_READ_TWICE = """
import sys
from pathlib import Path
from modelrunner.server.cli.chat_session import LineReader
reader = LineReader(sys.stdin, sys.stdout, Path(sys.argv[1]))
print("GOT", repr(reader.read("> ")), flush=True)
print("GOT", repr(reader.read("> ")), flush=True)
reader.save()
"""


def _on_a_terminal(history: Path, typed: bytes) -> str:
    """Run a LineReader on a real pseudo-terminal, type `typed`, return what it printed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", _READ_TWICE, str(history)],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + 20
        for chunk in typed.split(b"\r"):
            if not chunk:
                continue
            while b"> " not in output[-200:] and time.monotonic() < deadline:
                if select.select([leader], [], [], 0.1)[0]:
                    output += os.read(leader, 4096)
            os.write(leader, chunk + b"\r")
            output = output.replace(b"> ", b">_")  # wait for the next prompt
        process.wait(timeout=20)
        while select.select([leader], [], [], 0.1)[0]:
            try:
                output += os.read(leader, 4096)
            except OSError:
                break
    finally:
        process.kill()
        os.close(leader)
    return output.decode(errors="replace")


def test_history_is_kept_between_sessions_on_a_terminal(tmp_path: Path) -> None:
    history = tmp_path / "state" / "history"
    first = _on_a_terminal(history, b"first\rsecond\r")
    assert "GOT 'first'" in first
    assert "GOT 'second'" in first
    assert history.read_text().split() == ["first", "second"]
    # the next session: Up twice brings back "first"; entered, it is the newest line, so a
    # single Up then brings it again
    again = _on_a_terminal(history, b"\x1b[A\x1b[A\r\x1b[A\r")
    assert again.count("GOT 'first'") == 2
    assert history.read_text().split() == ["first", "second", "first"]
