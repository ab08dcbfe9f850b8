"""`modelrunner ps`, `unload` (`stop`), `status` and `configure`: DMR's engine verbs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrunner.core.store.store import StoredModel
from modelrunner.server.cli.client import ApiClient
from modelrunner.server.cli.engines import cmd_unload, ps_rows
from modelrunner.server.cli.main import build_parser, main
from tests.processes import ApiProcess, free_port

NOW = 1_800_000_000.0
"""2027-01-15T08:00:00Z"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_ps_rows_say_until_when_as_dmr_does() -> None:
    entries: list[dict[str, Any]] = [
        {"backend_name": "llama.cpp", "model_name": "ai/smollm2:latest", "mode": "completion",
         "last_used": "0001-01-01T00:00:00Z", "in_use": True},
        {"backend_name": "llama.cpp", "model_name": "ai/loading:v1", "mode": "completion",
         "last_used": "0001-01-01T00:00:00Z", "loading": True},
        {"backend_name": "llama.cpp", "model_name": "docker.io/myorg/kept:v2", "mode": "embedding",
         "last_used": "2027-01-15T07:59:00Z", "keep_alive": "-1"},
        {"backend_name": "llama.cpp", "model_name": "hf.co/org/idle:Q4_K_M", "mode": "completion",
         "last_used": "2027-01-15T07:58:00Z"},
        {"backend_name": "llama.cpp", "model_name": "ai/old", "mode": "reranking",
         "last_used": "2027-01-15T07:50:00Z", "keep_alive": "5m0s"},
        {"backend_name": "llama.cpp", "model_name": "sha256:" + "ab" * 32, "mode": "completion",
         "last_used": "2027-01-15T07:59:30.5Z", "keep_alive": "1h0m0s"},
    ]  # fmt: skip
    assert ps_rows(entries, NOW) == [
        ["smollm2", "llama.cpp", "completion", "5 minutes from now"],
        ["loading:v1", "llama.cpp", "completion", "Loading..."],
        ["myorg/kept:v2", "llama.cpp", "embedding", "Forever"],
        ["hf.co/org/idle:Q4_K_M", "llama.cpp", "completion", "3 minutes from now"],
        ["old", "llama.cpp", "reranking", "Expiring"],
        ["abababababab", "llama.cpp", "completion", "59 minutes from now"],
    ]


def test_ps_with_nothing_running_prints_the_header(
    api: ApiProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "ps")
    assert code == 0
    assert out == "MODEL NAME  BACKEND  MODE  UNTIL\n"
    code, out, _ = run_cli(capsys, "ps", "--json")
    assert code == 0
    assert json.loads(out) == []


def test_unload_says_what_it_did(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "unload", "--all") == (0, "No models are running.\n", "")
    assert run_cli(capsys, "stop", "tiny") == (0, "No such model(s) running.\n", "")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["unload"], "give MODEL names or --all"),
        (["unload", "--all", "tiny"], "either MODEL names or --all"),
        (["configure"], "the following arguments are required: MODEL"),
        (["configure", "tiny", "--context-size", "big"], "invalid int value: 'big'"),
        (["configure", "tiny", "--mode", "dance"], "invalid choice: 'dance'"),
        (["ps", "tiny"], "unrecognized arguments: tiny"),
        (["configure", "tiny", "--temp", "0.2"], "llama-server flags go after `--`"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert words in usage_error(capsys, *argv)


def test_unload_refuses_a_malformed_name_locally(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "unload", "Bad/Name")
    assert code == 1
    assert "invalid model reference 'Bad/Name'" in err


def test_status_when_running(api: ApiProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "modelrunner is running"
    assert lines[1] == ""
    assert lines[2].split() == ["BACKEND", "STATUS", "DETAILS"]
    assert lines[3].split()[:2] == ["llama.cpp", "Running"]
    code, out, _ = run_cli(capsys, "status", "--json")
    status = json.loads(out)
    assert status["running"] is True
    assert status["backends"]["llama.cpp"].startswith("Running")
    assert status["endpoint"] == f"{api.host}/engines/v1/"


def test_status_when_not_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MODEL_RUNNER_HOST", host)
    code, out, err = run_cli(capsys, "status")
    assert code == 1
    assert out == ""
    assert err.startswith(f"modelrunner: cannot connect to modelrunner at {host}")
    code, out, _ = run_cli(capsys, "status", "--json")
    assert code == 1
    assert json.loads(out) == {"running": False, "backends": {}, "endpoint": f"{host}/engines/v1/"}


def test_configure_then_show(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "configure", "tiny", "--context-size", "256", "--keep-alive", "10m",
        "--", "--temp", "0.5",
    )  # fmt: skip
    assert code == 0, err
    assert out == 'Configured "tiny".\n'
    code, out, _ = run_cli(capsys, "configure", "show", "tiny")
    assert code == 0
    [entry] = json.loads(out)
    assert entry["Config"] == {
        "context-size": 256,
        "runtime-flags": ["--temp", "0.5"],
        "keep_alive": "10m0s",
    }
    assert out.startswith('[\n  {\n    "Backend"')  # DMR's 2-space indent


def test_configure_shows_the_servers_reason(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "configure", "tiny", "--", "--host", "0.0.0.0")
    assert code == 1
    assert out == ""
    assert err.startswith("modelrunner: ")
    assert err.count("\n") == 1
    assert "--host" in err
    assert "{" not in err


class BusyClient(ApiClient):
    """A server whose one runner is loading: unload leaves it, ps lists it."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")

    def json_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        assert path == "/engines/unload"
        return {"unloaded_runners": 0}

    def json_list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        assert path == "/engines/ps"
        return [
            {"backend_name": "llama.cpp", "model_name": "ai/smollm2:135M-Q4_1",
             "mode": "completion", "last_used": "0001-01-01T00:00:00Z", "loading": True},
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["smollm2:135M-Q4_1"], "smollm2:135M-Q4_1 is busy (loading or answering); it stays.\n"),
        (["--all"], "No idle models to unload: 1 busy (loading or answering) stays.\n"),
        (["ai/other"], "No such model(s) running.\n"),
    ],
)
def test_unload_of_a_busy_model_says_it_is_busy(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    args = build_parser().parse_args(["unload", *argv])
    assert cmd_unload(BusyClient(), args) == 0
    assert capsys.readouterr().out == said
