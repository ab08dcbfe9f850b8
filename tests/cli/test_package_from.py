"""`modelrunner package --from` against a real API process: DMR's repackage and export paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelrunner.core.store import media_types
from modelrunner.core.store.store import ModelStore, StoredModel
from modelrunner.server.cli.main import main
from tests.cli.conftest import TINY
from tests.processes import ApiProcess


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _blob_inodes(store: ModelStore) -> dict[str, int]:
    folder = store.root / "blobs" / "sha256"
    return {path.name: path.stat().st_ino for path in folder.iterdir()}


def test_from_with_context_size_repackages_on_the_server(
    api: ApiProcess, tiny_model: StoredModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path / "models")
    before = _blob_inodes(store)
    code, out, err = run_cli(
        capsys, "package", "--from", TINY, "--context-size", "8192", "ai/tiny-long:v1"
    )
    assert code == 0, err
    assert err.splitlines() == [
        f'Reading model from daemon: "{TINY}"',
        "Setting context size 8192",
        "Creating lightweight model variant...",
        "Model variant created successfully",
    ]
    assert out == ""
    code, out, _ = run_cli(capsys, "inspect", "ai/tiny-long:v1")
    assert code == 0
    answer = json.loads(out)
    assert answer["config"]["context_size"] == 8192
    assert answer["id"] != tiny_model.id
    # Layers shared: every blob that was there is the same file; one new blob, the config.
    after = _blob_inodes(store)
    assert {name: after[name] for name in before} == before
    new_config = json.loads(store.manifest_bytes("ai/tiny-long:v1"))["config"]["digest"][7:]
    assert set(after) - set(before) == {new_config}


def test_from_with_a_license_exports_adds_the_layer_and_loads(
    api: ApiProcess, tiny_model: StoredModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    license_file = tmp_path / "LICENSE"
    license_file.write_text("FAKE LICENSE\n")
    code, out, err = run_cli(
        capsys, "package", "--from", "tiny", "--context-size", "1024",
        "-l", str(license_file), "myorg/licensed:v1",
    )  # fmt: skip
    assert code == 0, err
    assert 'Reading model from daemon: "tiny"' in err
    assert f'Adding license file from "{license_file}"' in err
    assert 'tagged "myorg/licensed:v1"' in out
    store = ModelStore(tmp_path / "models")
    source = json.loads(store.manifest_bytes(TINY))
    derived = json.loads(store.manifest_bytes("myorg/licensed:v1"))
    assert derived["layers"][:-1] == source["layers"]
    assert derived["layers"][-1]["mediaType"] == media_types.LICENSE
    assert derived["config"]["mediaType"] == source["config"]["mediaType"]
    config = json.loads(store.blob_path(derived["config"]["digest"]).read_bytes())
    assert config["config"]["context_size"] == 1024
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in derived["layers"]]
    assert (
        store.bundle("myorg/licensed:v1").gguf.read_bytes() == store.bundle(TINY).gguf.read_bytes()
    )
    license_blob = store.blob_path(derived["layers"][-1]["digest"])
    assert license_blob.read_text() == "FAKE LICENSE\n"


def test_from_errors(
    api: ApiProcess, tiny_model: StoredModel, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "package", "--from", "ai/nothing", "--context-size", "99", "a/b")
    assert code == 1
    assert "nothing" in err
    code, _, err = run_cli(capsys, "package", "--from", "ai/nothing", "-l", str(tiny_gguf), "a/b")
    assert code == 1
    assert "nothing" in err
    code, _, err = run_cli(capsys, "package", "--from", TINY, "--gguf", str(tiny_gguf), "a/b")
    assert code == 1
    assert "Cannot specify more than one of --gguf or --from" in err
    code, _, err = run_cli(capsys, "package", "a/b")
    assert code == 1
    assert "One of --gguf or --from is required" in err
    code, _, err = run_cli(capsys, "package", "--from", TINY, "--context-size", "0", "a/b")
    assert code == 1
    assert "context_size must be" in err


def test_inspect_of_a_model_named_export_is_not_an_export(
    api: ApiProcess, tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ModelStore(tmp_path / "models").package_gguf(tiny_gguf, "ai/export:latest")
    for name in ("ai/export", "export"):
        code, out, err = run_cli(capsys, "inspect", name)
        assert code == 0, err
        assert json.loads(out)["id"] == model.id
