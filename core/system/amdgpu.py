"""AMD GPUs from the amdgpu driver's sysfs files (no library needed): name, VRAM, busy share.

Each `/sys/class/drm/cardN/device` with vendor 0x1002 and `mem_info_vram_total` is one GPU. The
driver gives no per-process VRAM here, so AMD readings carry no runner attribution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DRM = Path("/sys/class/drm")
_AMD_VENDOR = "0x1002"
_CARD_RE = re.compile(r"card(\d+)")


@dataclass(frozen=True, slots=True)
class AmdGpu:
    """One AMD GPU's readings."""

    name: str
    memory_total: int
    memory_used: int
    busy_percent: int | None


def read_amd_gpus(drm: Path = DRM) -> tuple[AmdGpu, ...]:
    """Every AMD GPU the amdgpu driver exposes under `drm`; () without any (or without sysfs)."""
    try:
        cards = sorted(
            (int(match.group(1)), entry)
            for entry in drm.iterdir()
            if (match := _CARD_RE.fullmatch(entry.name))
        )
    except OSError:
        return ()
    gpus: list[AmdGpu] = []
    for _, card in cards:
        device = card / "device"
        if _read(device / "vendor") != _AMD_VENDOR:
            continue
        total = _number(device / "mem_info_vram_total")
        used = _number(device / "mem_info_vram_used")
        if total is None or used is None:
            continue  # not amdgpu, or too old to say
        name = _read(device / "product_name") or f"AMD GPU {_read(device / 'device') or '?'}"
        gpus.append(AmdGpu(name, total, used, _number(device / "gpu_busy_percent")))
    return tuple(gpus)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text is not None and text.isdigit() else None
