"""HostSampler: machine CPU and RAM, and the RSS/CPU of a real process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from modelrunner.core.system.host import HostSampler

MiB = 1 << 20

HOG = (
    "import time; b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
    "t = time.time()\nwhile time.time() - t < 30: pass"
)


def test_machine_memory_and_cpu() -> None:
    sample = HostSampler().sample()
    assert sample.ram_total > sample.ram_available > 0
    assert sample.ram_used == sample.ram_total - sample.ram_available
    assert sample.cpu_count >= 1
    assert 0.0 <= sample.cpu_percent <= 100.0
    assert sample.processes == {}


def test_a_process_tree_is_summed_and_cpu_has_a_baseline() -> None:
    parent = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -c "{HOG}" & wait'], start_new_session=True
    )
    try:
        sampler = HostSampler()
        time.sleep(1.0)
        first = sampler.sample([parent.pid]).processes[parent.pid]
        assert first.cpu_percent == 0.0  # first sight of the process: no baseline yet
        time.sleep(0.5)
        tree = sampler.sample([parent.pid]).processes[parent.pid]
        assert tree.pids[0] == parent.pid
        assert len(tree.pids) == 2
        assert tree.rss_bytes > 64 * MiB
        assert tree.cpu_percent > 30.0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the group start_new_session made
        parent.wait()


def test_a_gone_pid_is_left_out() -> None:
    done = subprocess.Popen(["true"])
    done.wait()
    assert HostSampler().sample([done.pid]).processes == {}
