"""Modal dialogs: ask for a model to pull, confirm a removal."""

from __future__ import annotations

from modelrunner.tui.dialogs.confirm import ConfirmDialog
from modelrunner.tui.dialogs.pull import PullDialog

__all__ = ["ConfirmDialog", "PullDialog"]
