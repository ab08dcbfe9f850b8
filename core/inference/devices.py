"""What a llama-server build can compute on: `llama-server --list-devices`.

A build without CUDA, ROCm or Vulkan lists no device and keeps every layer in RAM, whatever GPU
the machine has; Metal's devices (`MTL0`) share the RAM. The memory estimate puts layers on a
GPU only for a build that lists a GPU with memory of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

_DEVICE_RE = re.compile(r"^\s+([^\s:]+): (.*?)(?: \((\d+) MiB, (\d+) MiB free\))?$")
_UNIFIED_PREFIXES = ("MTL",)
"""Device names whose memory is the machine's RAM (Apple's Metal)."""


@dataclass(frozen=True, slots=True)
class Device:
    """One non-CPU device a llama-server build can use."""

    name: str
    """ggml's name, e.g. "CUDA0", "ROCm0", "Vulkan0", "MTL0"."""
    description: str
    """e.g. "NVIDIA GeForce RTX 4090"."""
    memory_total: int | None = None
    memory_free: int | None = None

    @property
    def unified_memory(self) -> bool:
        """Whether its memory is the RAM (then layers on it count as RAM)."""
        return self.name.startswith(_UNIFIED_PREFIXES)


def parse_devices(output: str) -> tuple[Device, ...] | None:
    """The devices in `--list-devices` output; None when the output is not such a list."""
    lines = output.splitlines()
    try:
        start = lines.index("Available devices:") + 1
    except ValueError:
        return None
    devices: list[Device] = []
    for line in lines[start:]:
        if line.strip() == "(none)":
            break
        match = _DEVICE_RE.match(line)
        if match is None:
            break
        name, description, total, free = match.groups()
        devices.append(
            Device(
                name,
                description,
                int(total) << 20 if total is not None else None,
                int(free) << 20 if free is not None else None,
            )
        )
    return tuple(devices)


_LIST_TIMEOUT = 30.0
"""Seconds `--list-devices` may take (it loads every backend the build has)."""


async def list_devices(binary: Path) -> tuple[Device, ...] | None:
    """The devices `binary` can use; None when it cannot tell (too old, failed, too slow)."""
    try:
        process = await asyncio.create_subprocess_exec(
            str(binary), "--list-devices",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), _LIST_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return None
    if process.returncode != 0:
        return None
    return parse_devices(out.decode("utf-8", "replace"))


def offloads(devices: tuple[Device, ...] | None) -> bool:
    """Whether layers go to GPU memory of its own; unknown (None) keeps the old assumption: yes."""
    if devices is None:
        return True
    return any(not device.unified_memory for device in devices)
