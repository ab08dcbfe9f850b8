"""Bad arguments and input: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import io

import pytest

from modelrunner.core.store.store import StoredModel
from modelrunner.server.cli.client import CliError, model_path
from modelrunner.server.cli.main import main
from tests.processes import ApiProcess


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_without_a_model_names_only_the_model_as_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["run"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: MODEL\n" in err


@pytest.mark.parametrize("text", ["sha256:zz", "sha256:" + "a" * 63 + "Z", "sha256:"])
def test_a_malformed_id_is_refused_locally(text: str) -> None:
    with pytest.raises(CliError, match="invalid model ID"):
        model_path(text)


def test_rm_goes_on_past_an_invalid_name(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "rm", "Bad/Name", "ghost", "tiny")
    assert code == 1
    assert out.splitlines() == ["Untagged: docker.io/ai/tiny:latest", f"Deleted: {tiny_model.id}"]
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("modelrunner: invalid model reference 'Bad/Name'")
    assert lines[1] == "no such model: ghost"


def test_login_with_stdin_closed_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run_cli(capsys, "login", "127.0.0.1:1")
    assert code == 1
    assert err.count("\n") == 1
    assert "username" in err
    assert "-u" in err


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("rm", "Untag or delete models."),
        ("pull", "Pull a model from a registry or Hugging Face."),
        ("df", "Show disk usage of models and the inference engine."),
        ("version", "Show the client and server versions."),
        ("ps", "List running models."),
    ],
)
def test_each_commands_help_says_what_it_does(
    capsys: pytest.CaptureFixture[str], command: str, says: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0
    assert f"\n\n{says}\n" in capsys.readouterr().out
