"""`modelrunner logs` and `modelrunner purge` against a real API process."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelrunner.core.log_files import ENGINE_LOG, SERVICE_LOG, LogFile
from modelrunner.core.store.store import ModelStore, StoredModel
from modelrunner.server.cli.main import main
from tests.gguf_factory import write_tiny_gguf
from tests.processes import ApiProcess

STAMPED = re.compile(r"^\[\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z\] ")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def log_dir() -> Path:
    return Path(os.environ["MODEL_RUNNER_LOG_DIR"])  # the API process inherits it


def test_logs_prints_both_logs_merged(
    api: ApiProcess, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    LogFile(log_dir() / ENGINE_LOG).write_line("llama-server: listening")
    assert main(["logs"]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert all(STAMPED.match(line) for line in lines)
    texts = [line.split("] ", 1)[1] for line in lines]
    assert any(
        text.startswith("INFO    modelrunner.server.serve: modelrunner API on") for text in texts
    )
    assert texts.index("llama-server: listening") > texts.index(
        next(text for text in texts if "Application startup complete" in text)
    )

    assert main(["logs", "--no-engines"]) == 0
    service_only = capsysbinary.readouterr().out.decode()
    assert "llama-server: listening" not in service_only
    assert "modelrunner API on" in service_only


def test_logs_without_a_service_log(api: ApiProcess, capsys: pytest.CaptureFixture[str]) -> None:
    (log_dir() / SERVICE_LOG).unlink()
    code, out, err = run_cli(capsys, "logs")
    assert (code, out) == (1, "")
    assert err == "modelrunner: service log not found\n"


def test_logs_follow_prints_new_lines_and_ctrl_c_exits_130_quietly(api: ApiProcess) -> None:
    command = [sys.executable, "-m", "modelrunner.server.cli.main", "logs", "-f", "--no-engines"]
    process = subprocess.Popen(
        command,
        env={**os.environ, "MODEL_RUNNER_HOST": api.host},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert b"modelrunner API on" in process.stdout.readline()
        LogFile(log_dir() / SERVICE_LOG).write_line("written after the CLI started following")
        deadline = time.monotonic() + 15
        while b"written after the CLI started following" not in process.stdout.readline():
            assert time.monotonic() < deadline
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert err.strip() == b""  # no traceback


@pytest.fixture
def two_models(tmp_path: Path) -> list[StoredModel]:
    """ai/tiny and ai/purge (a model whose name is the route's) in the API's store."""
    store = ModelStore(tmp_path / "models")
    return [
        store.package_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"), "ai/tiny"),
        store.package_gguf(write_tiny_gguf(tmp_path / "p.gguf", name="p", seed=1), "ai/purge"),
    ]


def listed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    code, out, _ = run_cli(capsys, "list", "-q")
    assert code == 0
    return out.split()


@pytest.mark.parametrize("answer", ["n\n", "\n", "yes\n"])
def test_purge_asks_and_anything_but_y_cancels(
    answer: str,
    api: ApiProcess,
    two_models: list[StoredModel],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    code, out, err = run_cli(capsys, "purge")
    assert (code, out) == (0, "")
    assert err == (
        "WARNING! This will remove the entire models directory.\n"
        "Are you sure you want to continue? [y/N] Operation cancelled.\n"
    )
    assert len(listed(capsys)) == 2


def test_purge_with_y_removes_every_model(
    api: ApiProcess,
    two_models: list[StoredModel],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, _ = run_cli(capsys, "purge")
    assert (code, out) == (0, "")
    assert listed(capsys) == []
    assert not any((api.models_path / "blobs").glob("*/*"))


def test_purge_force_does_not_ask(
    api: ApiProcess,
    two_models: list[StoredModel],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # nothing to read: it must not ask
    code, out, err = run_cli(capsys, "purge", "--force")
    assert (code, out, err) == (0, "", "")
    assert listed(capsys) == []


def test_purge_with_stdin_closed_is_an_error(
    api: ApiProcess,
    two_models: list[StoredModel],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run_cli(capsys, "purge")
    assert code == 1
    assert err.endswith(
        "modelrunner: no answer (stdin is closed): `purge --force` purges without asking\n"
    )
    assert len(listed(capsys)) == 2


def test_rm_of_a_model_named_purge_removes_only_it(
    api: ApiProcess, two_models: list[StoredModel], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny, purge = two_models
    code, out, _ = run_cli(capsys, "rm", "purge")
    assert code == 0
    assert out == f"Untagged: docker.io/ai/purge:latest\nDeleted: {purge.id}\n"
    assert listed(capsys) == [tiny.id[7:19]]
