"""One pull in a child process, for the kill -9 tests.

usage: python pull_child.py ROOT REFERENCE PARALLEL_THRESHOLD
(ROOT holds models/, state/, config/ and cache/.)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from modelrunner.core.distribution.pull import Puller
from modelrunner.core.distribution.registry import RegistryClient
from modelrunner.core.distribution.transfer import TransferOptions
from modelrunner.core.event_bus import EventBus
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore


async def main(root: Path, reference: str, threshold: int) -> None:
    settings = Settings(
        models_path=root / "models",
        config_dir=root / "config",
        cache_dir=root / "cache",
        state_dir=root / "state",
        seed_default_model=False,
    )
    options = TransferOptions(parallel_threshold=threshold, stall_timeout=10, backoff=0.1)
    store = ModelStore(settings.models_path)
    puller = Puller(settings, store, EventBus(), lambda: RegistryClient(settings), options=options)
    try:
        model = await puller.pull(reference)
    finally:
        await puller.close()
    print(model.id, flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
