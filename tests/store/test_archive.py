"""DMR's export/load tarball: entry order, round trip, digest checks, '..' rejection."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store.archive import _entry_header, write_archive
from modelrunner.core.store.package import build_gguf_artifact
from modelrunner.core.store.store import ModelStore


def tar_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_written_archive_has_dmr_entry_order(tiny_gguf: Path, tmp_path: Path) -> None:
    license_path = tmp_path / "LICENSE"
    license_path.write_text("MIT")
    artifact = build_gguf_artifact(tiny_gguf, licenses=[license_path])
    buffer = io.BytesIO()
    write_archive(artifact, buffer)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        names = archive.getnames()
        manifest = archive.extractfile("manifest.json")
        assert manifest is not None
        assert manifest.read() == artifact.manifest_bytes
    assert names == [
        "blobs",
        "blobs/sha256",
        f"blobs/sha256/{artifact.layers[0].digest[7:]}",
        f"blobs/sha256/{artifact.layers[1].digest[7:]}",
        f"blobs/sha256/{artifact.config_digest[7:]}",
        "manifest.json",
    ]


def test_export_then_load_into_another_store(
    store: ModelStore, tiny_gguf: Path, tmp_path: Path
) -> None:
    model = store.package_gguf(tiny_gguf, "ai/x", context_size=4096)
    buffer = io.BytesIO()
    store.export_archive("x", buffer)
    other = ModelStore(tmp_path / "other")
    buffer.seek(0)
    assert other.load_archive(buffer) == model.id
    loaded = other.get(model.id)
    assert loaded.tags == ()  # load does not tag, like DMR
    assert loaded.config == model.config
    assert other.manifest_bytes(model.id) == store.manifest_bytes("x")
    assert other.bundle(model.id).gguf.read_bytes() == tiny_gguf.read_bytes()


def test_cli_style_load_of_a_built_artifact(store: ModelStore, tiny_gguf: Path) -> None:
    artifact = build_gguf_artifact(tiny_gguf)
    buffer = io.BytesIO()
    write_archive(artifact, buffer)
    buffer.seek(0)
    model_id = store.load_archive(buffer)
    assert model_id == artifact.id
    assert store.tag(model_id, "ai/packaged:v1") == "docker.io/ai/packaged:v1"


def test_blob_with_wrong_content_is_rejected_and_not_kept(store: ModelStore) -> None:
    data = tar_bytes([("blobs/sha256/" + "a" * 64, b"not matching"), ("manifest.json", b"{}")])
    with pytest.raises(InvalidInput, match="does not match"):
        store.load_archive(io.BytesIO(data))
    assert not list((store.root / "blobs").glob("sha256/*"))


@pytest.mark.parametrize("name", ["../evil", "blobs/../../evil", "blobs/sha256/..x"])
def test_entries_with_dot_dot_are_rejected(store: ModelStore, name: str) -> None:
    with pytest.raises(InvalidInput, match=r"\.\."):
        store.load_archive(io.BytesIO(tar_bytes([(name, b"x")])))


def test_archive_without_manifest_or_not_a_tar(store: ModelStore) -> None:
    with pytest.raises(InvalidInput, match="no manifest"):
        store.load_archive(io.BytesIO(tar_bytes([("ignore-me/readme", b"x")])))
    with pytest.raises(InvalidInput, match="not a valid model archive"):
        store.load_archive(io.BytesIO(b"this is not a tar file at all" * 40))


def test_manifest_with_missing_layer_blob_is_refused(store: ModelStore, tiny_gguf: Path) -> None:
    artifact = build_gguf_artifact(tiny_gguf)
    data = tar_bytes([("manifest.json", artifact.manifest_bytes)])
    with pytest.raises(InvalidInput, match="missing"):
        store.load_archive(io.BytesIO(data))
    assert store.list() == []


def test_headers_are_go_archive_tar_bytes(tiny_gguf: Path) -> None:
    """DMR's tar.Header{Name, Mode, Size} through Go's writer: ustar, zeros, no record padding."""
    artifact = build_gguf_artifact(tiny_gguf)
    buffer = io.BytesIO()
    write_archive(artifact, buffer)
    data = buffer.getvalue()
    first = data[:512]
    assert first[:6] == b"blobs\0"  # no trailing slash, unlike Python's tarfile
    zero_octal_8, zero_octal_12 = b"0000000\x00", b"00000000000\x00"
    assert first[100:108] == b"0000755\x00"
    assert first[108:148] == zero_octal_8 * 2 + zero_octal_12 * 2  # uid, gid, size, mtime
    assert first[148:156] == b"%06o\0 " % (sum(first[:148]) + 8 * 32 + sum(first[156:]))
    assert first[156:157] == b"5"
    assert first[257:265] == b"ustar\x0000"
    assert first[265:329] == b"\0" * 64  # no user or group names
    assert first[329:345] == zero_octal_8 * 2  # device numbers
    size = sum(512 + -(-length // 512) * 512 for length in (
        *(layer.size for layer in artifact.layers),
        len(artifact.config_bytes),
        len(artifact.manifest_bytes),
    ))  # fmt: skip
    assert len(data) == 2 * 512 + size + 1024  # two zero blocks, no padding to 10 KiB


def test_a_blob_past_8_gib_gets_gos_pax_size_record() -> None:
    header = _entry_header("blobs/sha256/" + "b" * 64, 9 << 30)
    assert header[:100].rstrip(b"\0") == b"blobs/sha256/PaxHeaders.0/" + b"b" * 64
    assert header[156:157] == b"x"
    assert header[512:531] == b"19 size=9663676416\n"
    assert header[1024 : 1024 + 77] == b"blobs/sha256/" + b"b" * 64
    assert header[1024 + 124 : 1024 + 136] == b"00000000000\0"
