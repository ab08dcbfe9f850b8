"""Text output of the CLI: DMR's borderless tables, the model list, durations and JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modelrunner.core.errors import InvalidReference
from modelrunner.core.references import display_name, parse_reference

LIST_HEADERS = (
    "MODEL NAME",
    "PARAMETERS",
    "QUANTIZATION",
    "ARCHITECTURE",
    "MODEL ID",
    "CREATED",
    "CONTEXT",
    "SIZE",
)
UNTAGGED = "<none>"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, no borders (DMR's `newTable`)."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def human_duration(seconds: float) -> str:
    """docker/go-units HumanDuration: "Less than a second", "About a minute", "3 days", …."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = whole // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def decimal_size(count: float) -> str:
    """Bytes as DMR's CLI prints them: `%.2f` with 1000-based units ("93.82 MB", "500.00 B")."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.2f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def short_id(model_id: str) -> str:
    """The 12 hex digits DMR shows for an ID."""
    return model_id.removeprefix("sha256:")[:12]


def context_size(config: Mapping[str, Any]) -> str:
    """config.context_size, else the GGUF context length, else "-"."""
    size = config.get("context_size")
    if isinstance(size, int) and size > 0:
        return str(size)
    gguf = config.get("gguf") or {}
    architecture = config.get("architecture") or "llama"
    raw = gguf.get(f"{architecture}.context_length") or gguf.get("llama.context_length")
    return str(raw) if raw else "-"


def _sort_key(name: str) -> tuple[str, bool, str]:
    """Base name case-insensitively, then the variant; no variant first."""
    base, colon, variant = name.rpartition(":")
    if not colon or "/" in variant:
        return name.lower(), False, ""
    return base.lower(), True, variant


def matches(model: Mapping[str, Any], wanted: str) -> bool:
    """DMR's list filter: the exact tag when `wanted` has one, else the repository."""
    try:
        reference = parse_reference(wanted)
    except InvalidReference:
        return False
    has_tag = ":" in wanted.rpartition("/")[2]
    for tag in model.get("tags") or ():
        try:
            stored = parse_reference(tag)
        except InvalidReference:
            continue
        if has_tag and stored.normalized == reference.normalized:
            return True
        if not has_tag and stored.name == reference.name:
            return True
    return False


def list_rows(models: Sequence[Mapping[str, Any]], now: float | None = None) -> list[list[str]]:
    """One row per tag (`<none>` for an untagged model), sorted like DMR."""
    now = time.time() if now is None else now
    rows: list[list[str]] = []
    for model in models:
        config = model.get("config") or {}
        created = model.get("created") or 0
        age = f"{human_duration(max(0.0, now - created))} ago" if created else "-"
        cells = [
            str(config.get("parameters", "")),
            str(config.get("quantization", "")),
            str(config.get("architecture", "")),
            short_id(str(model.get("id", ""))),
            age,
            context_size(config),
            str(config.get("size", "")),
        ]
        names = [display_name(tag) for tag in model.get("tags") or ()] or [UNTAGGED]
        rows.extend([name, *cells] for name in names)
    rows.sort(key=lambda row: _sort_key(row[0]))
    return rows


def model_table(models: Sequence[Mapping[str, Any]], now: float | None = None) -> str:
    """The `list` table."""
    return table(LIST_HEADERS, list_rows(models, now))


def show_text(model: Mapping[str, Any]) -> str:
    """DMR's `show`: the model, its config, then its GGUF metadata, one `label: value` a line."""
    config: Mapping[str, Any] = model.get("config") or {}
    created = model.get("created")
    when = (
        datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
        if isinstance(created, int | float) and created > 0
        else "-"
    )
    tags = ", ".join(_plain_tag(str(tag)) for tag in model.get("tags") or ()) or UNTAGGED
    lines = [
        f"Model:       {model.get('id', '')}",
        f"Tags:        {tags}",
        f"Created:     {when}",
        "",
    ]
    fields = [
        ("Format", config.get("format")),
        ("Architecture", config.get("architecture")),
        ("Parameters", config.get("parameters")),
        ("Size", config.get("size")),
        ("Quantization", config.get("quantization")),
        ("Context Size", context_size(config)),
    ]
    lines += [f"{label + ':':<14}{value}" for label, value in fields if value not in (None, "")]
    for title, key in (("GGUF Metadata", "gguf"), ("Safetensors Metadata", "safetensors")):
        metadata = config.get(key)
        if isinstance(metadata, Mapping) and metadata:
            lines += ["", f"{title}:", *(f"  {name}: {value}" for name, value in metadata.items())]
    return "\n".join(lines)


def _plain_tag(tag: str) -> str:
    """A stored tag as a user would type it back ("docker.io/ai/x:v1" -> "ai/x:v1")."""
    try:
        return parse_reference(tag).normalized
    except InvalidReference:
        return tag


def pretty_json(value: Any) -> str:
    """JSON with a 4-space indent and no escaping beyond JSON's own (DMR's `inspect`)."""
    return json.dumps(value, indent=4, ensure_ascii=False)
