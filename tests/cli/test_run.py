"""`modelrunner run` against a real API process and llama-server: one-shot, piped, interactive."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modelrunner.core.store.store import StoredModel
from modelrunner.server.cli.client import ApiClient
from modelrunner.server.cli.main import main
from modelrunner.server.cli.run import run_model
from tests.processes import ApiProcess


class TerminalInput(io.StringIO):
    """Lines typed at a terminal."""

    def isatty(self) -> bool:
        return True


def test_missing_model_is_a_clear_error(
    api: ApiProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", TerminalInput(""))
    assert main(["run", "ai/ghost", "hi"]) == 1
    err = capsys.readouterr().err
    assert "model 'ai/ghost' not found locally" in err


@pytest.mark.llama
def test_one_prompt_streams_an_answer(
    llama_server: Path,
    api: ApiProcess,
    tiny_model: StoredModel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", TerminalInput(""))
    assert main(["run", "tiny", "say", "hello"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    assert out.strip()


class RecordingClient(ApiClient):
    """Answers every chat with "ok" and remembers what was sent (no server involved)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.sent: list[Mapping[str, Any]] = []

    def get_model(self, name: str) -> dict[str, Any]:
        return {"id": "sha256:" + "0" * 64}

    @contextmanager
    def stream_chat(self, payload: Mapping[str, Any]) -> Iterator[Iterator[str]]:
        self.sent.append(payload)
        yield iter(["o", "k"])


def test_piped_stdin_is_appended_after_a_blank_line() -> None:
    client, out = RecordingClient(), io.StringIO()
    assert run_model(client, "m", "summarise", io.StringIO("piped text"), out) == 0
    assert client.sent[0]["messages"] == [{"role": "user", "content": "summarise\n\npiped text"}]
    assert out.getvalue() == "ok\n"


def test_piped_stdin_alone_is_the_prompt() -> None:
    client = RecordingClient()
    assert run_model(client, "m", "", io.StringIO("only stdin"), io.StringIO()) == 0
    assert client.sent[0]["messages"][0]["content"] == "only stdin"


def test_system_prompt_goes_first() -> None:
    client = RecordingClient()
    assert run_model(client, "m", "hi", TerminalInput(""), io.StringIO(), "Be brief.") == 0
    assert client.sent[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_interactive_history_is_kept() -> None:
    client, out = RecordingClient(), io.StringIO()
    assert run_model(client, "m", "", TerminalInput("one\ntwo\n"), out) == 0
    assert [m["content"] for m in client.sent[1]["messages"]] == ["one", "ok", "two"]
    assert out.getvalue().endswith("> ok\n> \n")


@pytest.mark.llama
def test_interactive_loop_until_bye(
    llama_server: Path,
    api: ApiProcess,
    tiny_model: StoredModel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # one turn only: the random-weight model's answers fill its 512-token context quickly
    monkeypatch.setattr("sys.stdin", TerminalInput("hello\n\n/bye\nnever sent\n"))
    assert main(["run", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Chatting with tiny.")
    assert out.count("> ") >= 3  # hello, the empty line, /bye
