"""Pure functions that turn store values into short strings for tables and status lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelrunner.core.references import display_name

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
NOT_KNOWN = "—"
"""What a cell shows when the store does not know the value."""


def human_size(size_bytes: int | None) -> str:
    """Bytes in binary units with three significant figures: "84.9 MiB", "1.23 GiB", "512 B"."""
    if size_bytes is None or size_bytes < 0:
        return NOT_KNOWN
    value = float(size_bytes)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            if value >= 100:
                return f"{value:.0f} {unit}"
            if value >= 10:
                return f"{value:.1f} {unit}"
            return f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_context(tokens: int | None) -> str:
    """A context length as people say it: "8K", "128K", "1M", or the plain number ("1,000")."""
    if tokens is None or tokens <= 0:
        return NOT_KNOWN
    if tokens % (1024 * 1024) == 0:
        return f"{tokens // (1024 * 1024)}M"
    if tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return f"{tokens:,}"


def context_length(config: Mapping[str, Any]) -> int | None:
    """The context a model is packaged with, else the one its GGUF header announces."""
    packaged = config.get("context_size")
    if isinstance(packaged, int) and packaged > 0:
        return packaged
    gguf = config.get("gguf")
    if not isinstance(gguf, Mapping):
        return None
    architecture = gguf.get("general.architecture") or config.get("architecture")
    raw = gguf.get(f"{architecture}.context_length") if architecture else None
    if raw is None:
        raw = next((v for k, v in gguf.items() if str(k).endswith(".context_length")), None)
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def config_text(config: Mapping[str, Any], key: str) -> str:
    """A text field of the model config ("parameters", "quantization"), or a dash."""
    value = config.get(key)
    return str(value) if value not in (None, "") else NOT_KNOWN


def human_quantization(config: Mapping[str, Any]) -> str:
    """The quantisation as people write it: "MOSTLY_Q4_1" -> "Q4_1"."""
    return config_text(config, "quantization").removeprefix("MOSTLY_")


def ellipsize(text: str, width: int) -> str:
    """Text cut to `width` characters, ending in "…" when it was cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def short_name(reference: str) -> str:
    """The name to show for a stored tag or reference ("docker.io/ai/x:latest" -> "x")."""
    return display_name(reference)


def short_id(model_id: str) -> str:
    """The first 12 hex digits of a model ID, as `docker model ls` shows it."""
    return model_id.removeprefix("sha256:")[:12]


def family_name(reference: str) -> str:
    """The name without its tag, for "Loading smollm2…" ("smollm2:135M-Q4_1" -> "smollm2")."""
    name = short_name(reference)
    if "@" in name:
        return name.split("@", 1)[0]
    head, _, _ = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    return head
