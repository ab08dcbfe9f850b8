"""A fake NVML: the pynvml functions GpuSampler calls, over canned GPUs (no GPU exists here)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

GiB = 1 << 30


class FakeNVMLError(Exception):
    pass


class FakeLibraryNotFound(FakeNVMLError):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


@dataclass
class FakeGpu:
    name: str | bytes
    total: int
    used: int
    utilization: int | None
    compute: list[tuple[int, int | None]]
    graphics: list[tuple[int, int | None]]


class FakeNVML:
    """The pynvml functions GpuSampler calls, over canned GPUs."""

    NVMLError = FakeNVMLError
    NVMLError_LibraryNotFound = FakeLibraryNotFound

    def __init__(self, gpus: list[FakeGpu], *, missing: bool = False) -> None:
        self.gpus = gpus
        self.missing = missing
        self.inits = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.missing:
            raise FakeLibraryNotFound("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str | bytes:
        return gpu.name

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> Any:
        return SimpleNamespace(total=gpu.total, used=gpu.used, free=gpu.total - gpu.used)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> Any:
        if gpu.utilization is None:
            raise FakeNotSupported("Not Supported")
        return SimpleNamespace(gpu=gpu.utilization, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu.compute]

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu: FakeGpu) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu.graphics]
