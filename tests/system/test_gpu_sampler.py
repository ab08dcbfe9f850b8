"""GpuSampler with a fake NVML (two GPUs, runner pids) and with the real pynvml (no GPU here)."""

from __future__ import annotations

from pathlib import Path

from modelrunner.core.system.gpu import GpuSampler
from tests.fakes.fake_nvml import FakeGpu, FakeNVML, GiB


def two_gpus() -> FakeNVML:
    return FakeNVML(
        [
            FakeGpu("NVIDIA A100", 40 * GiB, 10 * GiB, 55, [(101, 6 * GiB), (999, 1 * GiB)], []),
            FakeGpu(b"NVIDIA L4", 24 * GiB, 3 * GiB, None, [(101, 2 * GiB)], [(202, None)]),
        ]
    )


def test_two_gpus_with_memory_attributed_to_runner_pids() -> None:
    nvml = two_gpus()
    sampler = GpuSampler(nvml)
    sample = sampler.sample({101: "sha256:aaa", 202: "sha256:bbb"})
    assert sample.reason is None
    first, second = sample.gpus
    assert (first.index, first.name, first.utilization_percent) == (0, "NVIDIA A100", 55)
    assert (first.memory_total, first.memory_used, first.memory_free) == (
        40 * GiB,
        10 * GiB,
        30 * GiB,
    )
    assert (second.name, second.utilization_percent) == ("NVIDIA L4", None)
    assert [(p.pid, p.runner) for p in first.processes] == [(101, "sha256:aaa"), (999, None)]
    assert [(p.pid, p.used_bytes, p.runner) for p in second.processes] == [
        (101, 2 * GiB, "sha256:aaa"),
        (202, None, "sha256:bbb"),
    ]
    assert sample.runner_memory == {"sha256:aaa": 8 * GiB}
    assert sample.memory_free == 51 * GiB
    sampler.sample()
    assert nvml.inits == 1  # initialised once, kept
    sampler.close()
    assert nvml.shutdowns == 1


def test_no_library_is_a_reason_not_an_exception() -> None:
    nvml = FakeNVML([], missing=True)
    sampler = GpuSampler(nvml)
    sample = sampler.sample()
    assert sample.gpus == ()
    assert sample.reason == "No NVIDIA GPU (NVML library not found)"
    assert sample.memory_free is None
    sampler.close()
    assert nvml.shutdowns == 0


def test_a_driver_with_no_gpu_is_a_reason_too() -> None:
    sample = GpuSampler(FakeNVML([])).sample()
    assert (sample.gpus, sample.reason) == ((), "No NVIDIA GPU (the driver reports none)")


def test_the_real_pynvml_here_says_why_there_is_no_gpu() -> None:
    sampler = GpuSampler()
    sample = sampler.sample({1: "x"})
    sampler.close()
    if sample.gpus:  # a machine with a GPU: readings, no reason
        assert sample.reason is None
        return
    assert sample.reason is not None
    assert sample.reason.startswith("No NVIDIA GPU")


async def test_read_runs_in_a_thread() -> None:
    sample = await GpuSampler(two_gpus()).read({202: "b"})
    assert len(sample.gpus) == 2


def fake_drm(root: Path, cards: dict[str, dict[str, str]]) -> Path:
    """A /sys/class/drm tree: one `cardN/device/` folder of driver files per card."""
    for card, files in cards.items():
        device = root / card / "device"
        device.mkdir(parents=True)
        for name, text in files.items():
            (device / name).write_text(text + "\n")
    (root / "card0-DP-1").mkdir()  # a connector, not a card
    return root


def test_amd_gpus_are_read_from_sysfs_when_nvml_has_none(tmp_path: Path) -> None:
    drm = fake_drm(
        tmp_path / "drm",
        {
            "card0": {"vendor": "0x1af4", "device": "0x1050"},  # virtio graphics
            "card1": {
                "vendor": "0x1002", "device": "0x744c", "product_name": "Radeon RX 7900 XTX",
                "mem_info_vram_total": str(24 * GiB), "mem_info_vram_used": str(2 * GiB),
                "gpu_busy_percent": "7",
            },
            "card2": {
                "vendor": "0x1002", "device": "0x1681",
                "mem_info_vram_total": str(512 << 20), "mem_info_vram_used": str(100 << 20),
            },
            "card3": {"vendor": "0x1002", "device": "0x6798"},  # radeon driver: no VRAM files
        },
    )  # fmt: skip
    sample = GpuSampler(FakeNVML([], missing=True), drm=drm).sample({1: "x"})
    assert sample.reason is None
    first, second = sample.gpus
    assert (first.index, first.name, first.utilization_percent) == (0, "Radeon RX 7900 XTX", 7)
    assert (first.memory_total, first.memory_free) == (24 * GiB, 22 * GiB)
    assert (second.index, second.name, second.utilization_percent) == (1, "AMD GPU 0x1681", None)
    assert sample.memory_free == 22 * GiB + (412 << 20)
    assert sample.runner_memory == {}  # the driver says nothing per process


def test_nvidia_wins_and_no_card_keeps_nvml_reason(tmp_path: Path) -> None:
    drm = fake_drm(
        tmp_path / "drm",
        {"card0": {"vendor": "0x1002", "mem_info_vram_total": "1", "mem_info_vram_used": "0"}},
    )
    assert [gpu.name for gpu in GpuSampler(two_gpus(), drm=drm).sample().gpus] == [
        "NVIDIA A100",
        "NVIDIA L4",
    ]
    none = GpuSampler(FakeNVML([]), drm=tmp_path / "no-drm").sample()
    assert (none.gpus, none.reason) == ((), "No NVIDIA GPU (the driver reports none)")
