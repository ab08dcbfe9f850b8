"""The persisted pull queue: pulls that were asked for and have not ended, kept across restarts.

A pull is added when it starts and removed when it stores its model, fails or is cancelled; a
pull that was running when the process stopped (or was killed) stays listed, and
`Puller.resume_pending()` starts it again, picking up its partial blobs.

File: `<state_dir>/pulls.json`, `{"pulls": [{"reference": "ai/x:latest", "added": 1732500000}]}`.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from modelrunner.core.store.layout import atomic_write

QUEUE_FILE = "pulls.json"


class PullQueue:
    """Normalised references of unfinished pulls, in the order they were asked for."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / QUEUE_FILE
        self._lock = threading.Lock()

    def _read(self) -> list[dict[str, Any]]:
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []  # a damaged queue file loses the queue, not the store
        pulls = document.get("pulls") if isinstance(document, dict) else None
        if not isinstance(pulls, list):
            return []
        return [
            entry
            for entry in pulls
            if isinstance(entry, dict) and isinstance(entry.get("reference"), str)
        ]

    def _write(self, pulls: list[dict[str, Any]]) -> None:
        atomic_write(self.path, json.dumps({"pulls": pulls}, indent=2).encode() + b"\n")

    def pending(self) -> list[str]:
        """References of the pulls that have not ended."""
        with self._lock:
            return [entry["reference"] for entry in self._read()]

    def add(self, reference: str) -> None:
        """List a pull (once)."""
        with self._lock:
            pulls = self._read()
            if any(entry["reference"] == reference for entry in pulls):
                return
            pulls.append({"reference": reference, "added": int(time.time())})
            self._write(pulls)

    def remove(self, reference: str) -> None:
        """Forget a pull that ended."""
        with self._lock:
            pulls = self._read()
            kept = [entry for entry in pulls if entry["reference"] != reference]
            if len(kept) != len(pulls):
                self._write(kept)
