"""Command-palette entries for models: pull, unload, remove, cancel a pull."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from modelrunner.tui.formatting import short_name
from modelrunner.tui.screens.library import LibraryScreen

Entry = tuple[str, str, Callable[[], object]]
"""A command: its title, its help line and what it does."""


class ModelCommands(Provider):
    """Pull a model…, Unload <model>, Remove <model>…, Cancel pull of <model>."""

    def _entries(self) -> list[Entry]:
        screen = self.screen
        if not isinstance(screen, LibraryScreen):
            return []
        entries: list[Entry] = [
            (
                "Pull a model…",
                "Pull a model from a registry or Hugging Face",
                screen.action_pull_model,
            )
        ]
        # One entry per loaded model, under the name its runner shows: a model with two tags
        # has one llama-server, so "Unload" under each tag would offer the same action twice.
        running = {runner.model_id: runner.name for runner in screen.runner_list.runners}
        for row in screen.table.rows_by_reference.values():
            name = running.pop(row.model.id, None)
            if name is not None:
                entries.append(
                    (
                        f"Unload {name}",
                        "Stop its llama-server; it loads again on the next message",
                        partial(screen.unload_model, row.model.id, name),
                    )
                )
        for row in screen.table.rows_by_reference.values():
            entries.append(
                (
                    f"Remove {row.name}…",
                    "Remove it from the store (asks first)",
                    partial(screen.confirm_remove, row),
                )
            )
        for reference in screen.pull_list.active:
            entries.append(
                (
                    f"Cancel pull of {short_name(reference)}",
                    "Stop the download; what is on disk is kept for next time",
                    partial(screen.cancel_pull, reference),
                )
            )
        return entries

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
