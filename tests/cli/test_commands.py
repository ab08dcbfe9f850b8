"""The `modelrunner` CLI against a real API process: list, inspect, tag, rm, package, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelrunner.core.store.store import ModelStore, StoredModel
from modelrunner.server.cli.main import main
from modelrunner.server.cli.output import LIST_HEADERS
from tests.gguf_factory import write_tiny_gguf
from tests.processes import ApiProcess, free_port, start_api, stop_api


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "inspect", "tag", "rm", "package", "run", "MODEL_RUNNER_HOST"):
        assert command in out
    for command in ("pull", "push", "ps", "unload", "status", "configure", "df", "version"):
        assert f"\n    {command} " in out  # listed with its help


def test_list_prints_dmr_table(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split("  ")[0] == "MODEL NAME"
    assert [cell.strip() for cell in header.split("  ") if cell.strip()] == list(LIST_HEADERS)
    cells = row.split()
    assert cells[0] == "tiny"
    assert tiny_model.id[7:19] in cells
    assert "512" in cells
    assert "ago" in row


def test_list_json_quiet_and_filter(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "ls", "--json")
    assert code == 0
    assert [model["id"] for model in json.loads(out)] == [tiny_model.id]
    code, out, _ = run_cli(capsys, "list", "-q")
    assert out == f"{tiny_model.id[7:19]}\n"
    code, out, _ = run_cli(capsys, "list", "-q", "ai/other")
    assert out == ""
    code, out, _ = run_cli(capsys, "list", "-q", "tiny:latest")
    assert out == f"{tiny_model.id[7:19]}\n"


def test_list_openai(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "list", "--openai")
    assert code == 0
    assert json.loads(out)["data"][0]["id"] == "ai/tiny:latest"


def test_inspect_prints_indented_json(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "inspect", "tiny")
    assert code == 0
    assert f'\n    "id": "{tiny_model.id}"' in out
    assert json.loads(out)["tags"] == ["docker.io/ai/tiny:latest"]


def test_inspect_of_a_missing_model_prints_the_server_message(
    api: ApiProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "inspect", "ai/ghost")
    assert code == 1
    assert out == ""
    assert "not found" in err
    code, _, err = run_cli(capsys, "inspect", "--openai", "ai/ghost")
    assert code == 1
    assert "not found" in err
    assert "{" not in err  # the envelope's message, not the envelope


def test_tag_then_rm(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "tag", "tiny", "myorg/tiny:v1")
    assert code == 0
    assert out == 'Model "tiny" tagged successfully with "myorg/tiny:v1"\n'
    _, out, _ = run_cli(capsys, "list")
    assert "myorg/tiny:v1" in out
    code, out, _ = run_cli(capsys, "rm", "myorg/tiny:v1")
    assert code == 0
    assert out == "Untagged: docker.io/myorg/tiny:v1\n"
    code, out, _ = run_cli(capsys, "rm", "ai/tiny")
    assert code == 0
    assert out.splitlines() == ["Untagged: docker.io/ai/tiny:latest", f"Deleted: {tiny_model.id}"]


def test_tag_onto_a_tag_of_another_model_says_it_moved(
    api: ApiProcess, tmp_path: Path, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    other_gguf = write_tiny_gguf(tmp_path / "other.gguf", name="other", seed=3)
    other = ModelStore(tmp_path / "models").package_gguf(other_gguf, "myorg/other:v1")
    code, out, err = run_cli(capsys, "tag", "tiny", "myorg/other:v1")
    assert code == 0
    assert out == 'Model "tiny" tagged successfully with "myorg/other:v1"\n'
    assert err == (
        f'"myorg/other:v1" was model {other.id[7:19]}, which is now untagged '
        f"(`modelrunner rm {other.id[7:19]}` deletes it)\n"
    )
    code, out, err = run_cli(capsys, "tag", "tiny", "myorg/other:v1")  # again: nothing moves
    assert (code, err) == (0, "")


def test_tag_validates_the_target_locally(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "tag", "tiny", "Bad/Name")
    assert code == 1
    assert "lower-case" in err


@pytest.mark.parametrize("command", ["inspect", "rm", "run"])
def test_a_dot_dot_name_is_refused_not_normalised_into_another_model(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`ai/../tiny` must not reach the server as `/models/tiny` (HTTP clients drop `..`)."""
    code, out, err = run_cli(capsys, command, "ai/../tiny")
    assert code == 1
    assert out == ""
    assert "invalid model reference 'ai/../tiny'" in err


def test_rm_of_a_missing_model(api: ApiProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "rm", "ghost")
    assert code == 1
    assert err == "no such model: ghost\n"


def test_rm_force_deletes_an_id_with_several_tags(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(capsys, "tag", "tiny", "tiny:two")
    code, _, err = run_cli(capsys, "rm", tiny_model.id)
    assert code == 1
    assert "cannot remove" in err
    code, out, _ = run_cli(capsys, "rm", "-f", tiny_model.id)
    assert code == 0
    assert f"Deleted: {tiny_model.id}" in out


def test_package_loads_and_tags(
    api: ApiProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gguf = write_tiny_gguf(tmp_path / "other.gguf", name="other", seed=3)
    license_file = tmp_path / "LICENSE"
    license_file.write_text("FAKE LICENSE\n")
    code, out, err = run_cli(
        capsys, "package", "--gguf", str(gguf), "--context-size", "256",
        "-l", str(license_file), "myorg/pkg:v1",
    )  # fmt: skip
    assert code == 0, err
    assert 'tagged "myorg/pkg:v1"' in out
    _, out, _ = run_cli(capsys, "list", "--json")
    [model] = json.loads(out)
    assert model["tags"] == ["docker.io/myorg/pkg:v1"]
    assert model["config"]["context_size"] == 256


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--gguf", "missing.gguf", "ai/x"], "does not exist"),
        (["--gguf", ".", "ai/x"], "is not a file"),
        (["--gguf", "GGUF", "--mmproj", "nope", "ai/x"], "mmproj file nope does not exist"),
        (["--gguf", "GGUF", "Bad/Name"], "lower-case"),
    ],
)
def test_package_refuses_bad_paths_and_names(
    api: ApiProcess,
    tiny_gguf: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: str,
) -> None:
    argv = [str(tiny_gguf) if arg == "GGUF" else arg for arg in args]
    code, _, err = run_cli(capsys, "package", *argv)
    assert code == 1
    assert words in err


def test_not_running_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MODEL_RUNNER_HOST", host)
    for argv in (["list"], ["inspect", "x"], ["rm", "x"], ["run", "x", "hi"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 1
        assert err.startswith(f"modelrunner: cannot connect to modelrunner at {host} (connection")
        assert err.count("\n") == 1
        assert "modelrunner-tui --headless" in err
        assert "Traceback" not in err


def test_unix_socket_host(
    tmp_path: Path, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    api = start_api(tmp_path, unix_socket=tmp_path / "api.sock")
    try:
        code, out, _ = run_cli(capsys, "--host", api.host, "list", "-q")
    finally:
        stop_api(api)
    assert code == 0
    assert out == f"{tiny_model.id[7:19]}\n"


def test_show_prints_the_model_in_words(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(capsys, "tag", "tiny", "tiny:two")
    code, out, _ = run_cli(capsys, "show", "tiny")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"Model:       {tiny_model.id}"
    assert lines[1] == "Tags:        ai/tiny:latest, ai/tiny:two"
    assert lines[2].startswith("Created:     20")
    assert lines[3] == ""
    assert lines[4] == "Format:       gguf"
    assert lines[5] == "Architecture: llama"
    assert "Context Size: 512" in lines
    assert "GGUF Metadata:" in lines
    assert "  general.architecture: llama" in lines
