"""GpuSampler: NVIDIA GPUs via NVML (pynvml), else AMD GPUs via amdgpu's sysfs; "no GPU" is a
normal answer with a reason.

Per GPU: name, memory, utilisation, and (NVML only) the memory of each process on it, attributed
to runners by pid. Tests pass a fake NVML module and a fake sysfs tree; the real NVML is `pynvml`
(nvidia-ml-py), imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelrunner.core.system.amdgpu import DRM, read_amd_gpus


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process holding memory on a GPU."""

    pid: int
    used_bytes: int | None
    """None when the driver does not say (e.g. inside some containers)."""
    runner: str | None = None
    """The runner (model ID) the pid belongs to, if it is one of ours."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU at one moment."""

    index: int
    name: str
    memory_total: int
    memory_used: int
    memory_free: int
    utilization_percent: int | None
    """GPU busy share over the driver's last sample period; None if unsupported."""
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True, slots=True)
class GpuSample:
    """Every GPU, or none with the reason."""

    gpus: tuple[GpuInfo, ...] = ()
    reason: str | None = None
    """Why there are no readings ("No NVIDIA GPU (NVML library not found)"), else None."""
    runner_memory: dict[str, int] = field(default_factory=dict)
    """GPU bytes per runner, summed over GPUs."""

    @property
    def memory_free(self) -> int | None:
        """Free bytes over every GPU; None without a GPU."""
        return sum(gpu.memory_free for gpu in self.gpus) if self.gpus else None


class GpuSampler:
    """Reads NVML; initialises it on first use and keeps it until `close()`."""

    def __init__(self, nvml: Any | None = None, drm: Path = DRM) -> None:
        """Args:
        nvml: An object with pynvml's functions (tests pass a fake); None imports pynvml.
        drm: Where the kernel lists graphics cards (AMD GPUs are read there without NVIDIA).
        """
        self._nvml = nvml
        self._drm = drm
        self._ready = False
        self._reason: str | None = None
        self._lock = threading.Lock()

    def _init(self) -> Any | None:
        if self._ready:
            return self._nvml
        if self._reason is not None:
            return None
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                self._reason = "No NVIDIA GPU readings (pynvml is not installed)"
                return None
            self._nvml = pynvml
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            self._reason = _no_gpu_reason(nvml, error)
            return None
        self._ready = True
        return nvml

    def sample(self, owners: Mapping[int, str] | None = None) -> GpuSample:
        """Read every GPU (blocking); `owners` maps pids to runner keys for attribution."""
        nvidia = self._sample_nvidia(owners or {})
        if nvidia.gpus:
            return nvidia
        amd = tuple(
            GpuInfo(
                index=index,
                name=gpu.name,
                memory_total=gpu.memory_total,
                memory_used=gpu.memory_used,
                memory_free=max(0, gpu.memory_total - gpu.memory_used),
                utilization_percent=gpu.busy_percent,
            )
            for index, gpu in enumerate(read_amd_gpus(self._drm))
        )
        return GpuSample(gpus=amd) if amd else nvidia

    def _sample_nvidia(self, owners: Mapping[int, str]) -> GpuSample:
        with self._lock:
            nvml = self._init()
            if nvml is None:
                return GpuSample(reason=self._reason)
            try:
                count = nvml.nvmlDeviceGetCount()
                gpus = tuple(_read_gpu(nvml, index, owners) for index in range(count))
            except nvml.NVMLError as error:
                return GpuSample(reason=f"NVML failed: {type(error).__name__}: {error}")
        if not gpus:
            return GpuSample(reason="No NVIDIA GPU (the driver reports none)")
        per_runner: dict[str, int] = {}
        for gpu in gpus:
            for process in gpu.processes:
                if process.runner is not None and process.used_bytes:
                    per_runner[process.runner] = (
                        per_runner.get(process.runner, 0) + process.used_bytes
                    )
        return GpuSample(gpus=gpus, runner_memory=per_runner)

    async def read(self, owners: Mapping[int, str] | None = None) -> GpuSample:
        """`sample` in a worker thread."""
        return await asyncio.to_thread(self.sample, owners)

    def close(self) -> None:
        with self._lock:
            if self._ready and self._nvml is not None:
                with contextlib.suppress(self._nvml.NVMLError):
                    self._nvml.nvmlShutdown()
            self._ready = False


def _no_gpu_reason(nvml: Any, error: Exception) -> str:
    not_found = getattr(nvml, "NVMLError_LibraryNotFound", None)
    if not_found is not None and isinstance(error, not_found):
        return "No NVIDIA GPU (NVML library not found)"
    driver = getattr(nvml, "NVMLError_DriverNotLoaded", None)
    if driver is not None and isinstance(error, driver):
        return "No NVIDIA GPU (NVIDIA driver not loaded)"
    return f"No NVIDIA GPU ({type(error).__name__}: {error})"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_gpu(nvml: Any, index: int, owners: Mapping[int, str]) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml.NVMLError:
        utilization = None
    processes: dict[int, GpuProcess] = {}
    for reader in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            running = getattr(nvml, reader)(handle)
        except (nvml.NVMLError, AttributeError):
            continue
        for entry in running:
            used = getattr(entry, "usedGpuMemory", None)
            pid = int(entry.pid)
            processes[pid] = GpuProcess(
                pid=pid,
                used_bytes=int(used) if isinstance(used, int) else None,
                runner=owners.get(pid),
            )
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_total=int(memory.total),
        memory_used=int(memory.used),
        memory_free=int(memory.free),
        utilization_percent=utilization,
        processes=tuple(processes.values()),
    )
