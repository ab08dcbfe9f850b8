"""What a llama-server build computes on (`--list-devices`), and what the memory estimate makes of
it: a CPU-only build on a machine with an NVIDIA GPU keeps every layer in RAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.core.event_bus import EventBus
from modelrunner.core.inference.configure import RunnerConfigs
from modelrunner.core.inference.devices import Device, list_devices, offloads, parse_devices
from modelrunner.core.inference.launcher import Launcher
from modelrunner.core.inference.runners import RunnerKey
from modelrunner.core.settings import Settings
from modelrunner.core.system.gpu import GpuSampler
from tests.fakes.fake_nvml import FakeGpu, FakeNVML, GiB
from tests.gguf_factory import write_tiny_gguf
from tests.inference.engine_fakes import FakeBundle, FakeStore, write_executable

CUDA = """Available devices:
  CUDA0: NVIDIA GeForce RTX 4090 (24564 MiB, 23000 MiB free)
  CUDA1: NVIDIA L4 (22478 MiB, 22000 MiB free)
"""
METAL = "Available devices:\n  MTL0: Apple M2 Max (49152 MiB, 49152 MiB free)\n"
NONE = "load_backend: loaded CPU backend\nAvailable devices:\n  (none)\n"
MODEL = "sha256:" + "d" * 64


def test_parse_devices() -> None:
    cuda = parse_devices(CUDA)
    assert cuda == (
        Device("CUDA0", "NVIDIA GeForce RTX 4090", 24564 << 20, 23000 << 20),
        Device("CUDA1", "NVIDIA L4", 22478 << 20, 22000 << 20),
    )
    assert offloads(cuda)
    metal = parse_devices(METAL)
    assert metal is not None
    assert [device.unified_memory for device in metal] == [True]
    assert not offloads(metal)  # Metal's memory is the RAM
    assert parse_devices(NONE) == ()
    assert not offloads(())
    assert parse_devices("error: invalid argument: --list-devices") is None
    assert offloads(None)  # cannot tell: as before, a readable GPU takes the layers


async def test_the_real_build_lists_no_device(llama_server: Path) -> None:
    """`just setup` builds llama-server for the CPU only."""
    assert await list_devices(llama_server) == ()


async def test_a_binary_that_cannot_say_is_unknown(tmp_path: Path) -> None:
    failing = write_executable(tmp_path / "old" / "llama-server", "#!/bin/sh\nexit 1\n")
    assert await list_devices(failing) is None
    assert await list_devices(tmp_path / "missing") is None


@pytest.mark.parametrize(("listing", "on_gpu"), [(NONE, False), (CUDA, True), (METAL, False)])
async def test_layers_go_to_the_gpu_only_for_a_build_that_uses_it(
    engine_settings: Settings, tmp_path: Path, listing: str, on_gpu: bool
) -> None:
    binary = write_executable(
        tmp_path / "bin" / "llama-server", f"#!/bin/sh\ncat <<'EOF'\n{listing}EOF\n"
    )
    (tmp_path / "bundle" / "model").mkdir(parents=True)
    gguf = write_tiny_gguf(tmp_path / "bundle" / "model" / "model.gguf")
    store = FakeStore()
    store.add(MODEL, FakeBundle(root=tmp_path / "bundle", gguf=gguf), "ai/tiny")
    nvml = FakeNVML([FakeGpu("NVIDIA L4", 24 * GiB, 1 * GiB, 0, [], [])])
    settings = engine_settings.with_changes(llama_server_path=binary)
    launcher = Launcher(settings, store, EventBus(), RunnerConfigs(), GpuSampler(nvml))
    prepared = await launcher.prepare(RunnerKey(MODEL, "completion"))
    assert prepared.estimate is not None
    assert prepared.estimate.gpu is on_gpu
    assert (prepared.estimate.vram_bytes > 0) is on_gpu
