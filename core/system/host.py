"""HostSampler: the machine's CPU and RAM, and RSS/CPU of each runner's process tree (psutil)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One runner's process tree (llama-server and any wrapper such as bubblewrap)."""

    pid: int
    rss_bytes: int
    """Resident memory of the whole tree."""
    cpu_percent: float
    """Since the previous sample; 100 = one core busy (0 on the first sample of a process)."""
    pids: tuple[int, ...] = ()
    """Every process of the tree, the root first."""


@dataclass(frozen=True, slots=True)
class HostSample:
    """The machine's CPU and memory at one moment."""

    cpu_percent: float
    """Whole machine, since the previous sample: 100 = every core busy."""
    cpu_count: int
    ram_total: int
    ram_available: int
    """What can be used without swapping (psutil's `available`)."""
    processes: dict[int, ProcessSample] = field(default_factory=dict)
    """By root pid; a pid that is gone is left out."""

    @property
    def ram_used(self) -> int:
        return self.ram_total - self.ram_available


class HostSampler:
    """Reads CPU and memory; keeps psutil's Process objects so per-process CPU % has a baseline."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}
        psutil.cpu_percent(None)  # prime the machine-wide counter

    def ram_available(self) -> int:
        """Bytes of RAM available now (fast: one /proc/meminfo read)."""
        return int(psutil.virtual_memory().available)

    def ram_total(self) -> int:
        return int(psutil.virtual_memory().total)

    def sample(self, pids: Collection[int] = ()) -> HostSample:
        """Read the machine and the process trees rooted at `pids` (blocking, a few ms)."""
        memory = psutil.virtual_memory()
        processes = {}
        for pid in pids:
            tree = self._tree(pid)
            if tree is not None:
                processes[pid] = tree
        self._processes = {
            pid: process for pid, process in self._processes.items() if process.is_running()
        }
        return HostSample(
            cpu_percent=psutil.cpu_percent(None),
            cpu_count=psutil.cpu_count() or 1,
            ram_total=int(memory.total),
            ram_available=int(memory.available),
            processes=processes,
        )

    async def read(self, pids: Collection[int] = ()) -> HostSample:
        """`sample` in a worker thread."""
        return await asyncio.to_thread(self.sample, pids)

    def _process(self, pid: int, fresh: set[int]) -> psutil.Process:
        process = self._processes.get(pid)
        if process is None or not process.is_running():
            process = psutil.Process(pid)
            process.cpu_percent(None)  # the baseline: this sample reports 0 for it
            self._processes[pid] = process
            fresh.add(pid)
        return process

    def _tree(self, pid: int) -> ProcessSample | None:
        try:
            fresh: set[int] = set()
            root = self._process(pid, fresh)
            children = root.children(recursive=True)
            members = [root, *(self._process(child.pid, fresh) for child in children)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        rss = 0
        cpu = 0.0
        seen: list[int] = []
        for member in members:
            try:
                with member.oneshot():
                    rss += member.memory_info().rss
                    percent = member.cpu_percent(None)
                    cpu += 0.0 if member.pid in fresh else percent
                seen.append(member.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not seen or seen[0] != pid:
            return None
        return ProcessSample(pid=pid, rss_bytes=rss, cpu_percent=cpu, pids=tuple(seen))
