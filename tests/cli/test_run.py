"""`modelrunner run` against a real API process and llama-server: one-shot, piped, interactive."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modelrunner.core.store.store import StoredModel
from modelrunner.server.cli.client import ApiClient, ServerError
from modelrunner.server.cli.main import main
from modelrunner.server.cli.run import run_model
from tests.processes import ApiProcess


class TerminalInput(io.StringIO):
    """Lines typed at a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_missing_model_is_pulled_first_as_dmr_does(
    api: ApiProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pull fails here (nothing listens at the registry): its error is the one shown."""
    monkeypatch.setattr("sys.stdin", TerminalInput(""))
    assert main(["run", "127.0.0.1:1/ai/ghost", "hi"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    ghost = "127.0.0.1:1/ai/ghost"
    assert lines[0] == f"Unable to find model '{ghost}' locally. Pulling from the server."
    assert lines[-1].startswith("modelrunner: cannot reach registry 127.0.0.1:1")


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


class PullingClient(RecordingClient):
    """Has no model until it is pulled."""

    def __init__(self) -> None:
        super().__init__()
        self.pulled: list[Mapping[str, Any] | None] = []

    def get_model(self, name: str) -> dict[str, Any]:
        if not self.pulled:
            raise ServerError(404, f"model {name} not found")
        return super().get_model(name)

    def stream_progress(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        self.pulled.append(body)
        yield {"type": "success", "message": "Model pulled successfully"}


def test_a_missing_model_is_pulled_then_answers(capsys: pytest.CaptureFixture[str]) -> None:
    client, out = PullingClient(), io.StringIO()
    assert run_model(client, "ai/m", "hi", TerminalInput(""), out) == 0
    assert client.pulled == [{"from": "ai/m:latest"}]
    assert out.getvalue() == "ok\n"  # stdout holds the answer only
    err = capsys.readouterr().err
    assert err.startswith("Unable to find model 'ai/m' locally. Pulling from the server.\n")
    assert err.endswith("Model pulled successfully\n")


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
    assert out.getvalue().startswith("Chatting with m. Type /? for help, /bye or Ctrl-D to leave.")
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
