"""Packaging local GGUFs into DMR artifacts: manifest, config, annotations, layer order."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store import media_types
from modelrunner.core.store.package import build_gguf_artifact
from tests.store.dmr_fixtures import write_dummy_gguf
from tests.store.test_go_json import CONFIG_DIGEST, GGUF_DIGEST

CREATED = datetime(2025, 6, 15, 12, 0, 0, tzinfo=UTC)
MTIME = int(datetime(2025, 7, 22, 9, 22, 0, tzinfo=UTC).timestamp())


@pytest.mark.usefixtures("utc")
def test_dummy_package_reproduces_the_reference_config_and_manifest(tmp_path: Path) -> None:
    gguf_path = write_dummy_gguf(tmp_path / "dummy.gguf")
    license_path = tmp_path / "license.txt"
    license_path.write_bytes(b"FAKE LICENSE\n")
    for path in (gguf_path, license_path):
        path.chmod(0o644)
        os.utime(path, (MTIME, MTIME))

    artifact = build_gguf_artifact(gguf_path, licenses=[license_path], created=CREATED)

    our_digest = "sha256:" + hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    # dummy.gguf's tensor bytes are unknown, so swap in its digest: the rest is byte-identical.
    config = artifact.config_bytes.replace(our_digest.encode(), GGUF_DIGEST.encode())
    assert len(config) == 912
    assert "sha256:" + hashlib.sha256(config).hexdigest() == CONFIG_DIGEST
    manifest = json.loads(artifact.manifest_bytes)
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest["config"]["mediaType"] == media_types.CONFIG_V01
    gguf_layer, license_layer = manifest["layers"]
    assert gguf_layer["mediaType"] == media_types.GGUF
    assert license_layer["digest"] == (
        "sha256:d0ce8fae4da6de6e5a4b85ebee156ac8f3ab6d8407caf4493968d34e9bc3939e"
    )
    assert list(gguf_layer["annotations"]) == [
        "org.cncf.model.file.mediatype.untested",
        "org.cncf.model.file.metadata+json",
        "org.cncf.model.filepath",
    ]
    assert gguf_layer["annotations"]["org.cncf.model.file.metadata+json"] == (
        '{"name":"dummy.gguf","mode":420,"uid":0,"gid":0,"size":2016,'
        '"mtime":"2025-07-22T09:22:00Z","typeflag":0}'
    )
    assert artifact.manifest_bytes.startswith(b'{"schemaVersion":2,"mediaType":')
    assert len(artifact.manifest_bytes) == 1073


def test_layer_order_is_weights_licenses_template_mmproj(tmp_path: Path, tiny_gguf: Path) -> None:
    paths = {name: tmp_path / name for name in ("a.txt", "b.txt", "t.jinja", "p.mmproj")}
    for name, path in paths.items():
        path.write_text(name)
    artifact = build_gguf_artifact(
        tiny_gguf,
        licenses=[paths["a.txt"], paths["b.txt"]],
        chat_template=paths["t.jinja"],
        mmproj=paths["p.mmproj"],
    )
    layers = json.loads(artifact.manifest_bytes)["layers"]
    assert [layer["mediaType"] for layer in layers] == [
        media_types.GGUF,
        media_types.LICENSE,
        media_types.LICENSE,
        media_types.CHAT_TEMPLATE,
        media_types.MMPROJ,
    ]
    assert [layer["annotations"]["org.cncf.model.filepath"] for layer in layers] == [
        "tiny.gguf",
        "a.txt",
        "b.txt",
        "t.jinja",
        "p.mmproj",
    ]
    config = json.loads(artifact.config_bytes)
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in layers]


def test_config_fields_come_from_the_gguf_header(tiny_gguf: Path) -> None:
    config = json.loads(build_gguf_artifact(tiny_gguf).config_bytes)
    assert list(config) == ["config", "descriptor", "rootfs"]
    inner = config["config"]
    assert list(inner) == [
        "format",
        "quantization",
        "parameters",
        "architecture",
        "size",
        "gguf",
        "context_size",
    ]
    assert inner["format"] == "gguf"
    assert inner["quantization"] == "MOSTLY_F32"
    assert inner["parameters"] == "118.85K"
    assert inner["architecture"] == "llama"
    assert inner["size"] == "464.25KiB"
    assert inner["context_size"] == 512
    assert list(inner["gguf"]) == sorted(inner["gguf"])
    assert config["rootfs"]["type"] == "rootfs"


def test_given_context_size_wins_and_same_inputs_give_the_same_id(tiny_gguf: Path) -> None:
    first = build_gguf_artifact(tiny_gguf, context_size=8192, created=CREATED)
    second = build_gguf_artifact(tiny_gguf, context_size=8192, created=CREATED)
    assert json.loads(first.config_bytes)["config"]["context_size"] == 8192
    assert first.id == second.id
    assert build_gguf_artifact(tiny_gguf, created=datetime.now(UTC)).id != first.id


def test_sharded_gguf_becomes_one_layer_per_shard(sharded_gguf: list[Path]) -> None:
    artifact = build_gguf_artifact(sharded_gguf[0])
    layers = json.loads(artifact.manifest_bytes)["layers"]
    assert [layer["annotations"]["org.cncf.model.filepath"] for layer in layers] == [
        "split-00001-of-00002.gguf",
        "split-00002-of-00002.gguf",
    ]


@pytest.mark.parametrize("problem", ["missing", "directory", "not-gguf", "bad-context"])
def test_bad_inputs_are_invalid_input(tmp_path: Path, tiny_gguf: Path, problem: str) -> None:
    target = tiny_gguf
    context_size = None
    if problem == "missing":
        target = tmp_path / "nope.gguf"
    elif problem == "directory":
        target = tmp_path
    elif problem == "not-gguf":
        target = tmp_path / "readme.gguf"
        target.write_text("hello")
    else:
        context_size = 0
    with pytest.raises(InvalidInput):
        build_gguf_artifact(target, context_size=context_size)
