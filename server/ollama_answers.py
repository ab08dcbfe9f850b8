"""Ollama's answers: chat and generate objects gathered from llama-server's OpenAI answers (token
counts and durations in nanoseconds from its `usage` and `timings`), model names and details as
Ollama lists them, embeddings, and pull statuses. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelrunner.core.errors import InvalidReference
from modelrunner.core.events import PullFinished, PullProgressed
from modelrunner.core.references import DEFAULT_NAMESPACE, DEFAULT_REGISTRY, parse_reference
from modelrunner.server.engines_routes import go_time

if TYPE_CHECKING:
    from modelrunner.core.distribution.progress import PullProgressEvent
    from modelrunner.core.store.store import StoredModel

NS_PER_SECOND = 1_000_000_000

NDJSON = "application/x-ndjson"
"""The media type of Ollama's streams: one JSON object per line."""

ENCODER_ARCHITECTURES = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "modern-bert", "neo-bert", "t5encoder"}
)
"""Architectures that only embed: Ollama gives them the "embedding" capability, not "completion"."""

_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}


def ndjson_line(item: Mapping[str, Any]) -> bytes:
    """One line of an NDJSON stream."""
    return json.dumps(item, ensure_ascii=False).encode() + b"\n"


# -- names and model details -----------------------------------------------------------------


def ollama_name(stored_tag: str) -> str:
    """A stored tag as Ollama shows names: "smollm2:135M-Q4_1", "tiny:latest", "hf.co/o/m:Q4".

    The "ai/" namespace of Docker Hub plays the part of Ollama's library, so it is left out; the
    tag is always shown, as Ollama does. Every such name resolves back to the same model.
    """
    try:
        reference = parse_reference(stored_tag)
    except InvalidReference:
        return stored_tag
    name = reference.name
    if reference.registry == DEFAULT_REGISTRY and name.startswith(f"{DEFAULT_NAMESPACE}/"):
        name = name[len(DEFAULT_NAMESPACE) + 1 :]
    return f"{name}:{reference.tag}"


def model_names(model: StoredModel) -> list[str]:
    """Every name of a model, one per tag; an untagged model goes by its ID."""
    return [ollama_name(tag) for tag in model.tags] or [model.id]


def digest_hex(model_id: str) -> str:
    """Ollama's digest: the manifest's sha256 in hex, without the "sha256:" prefix."""
    return model_id.removeprefix("sha256:")


def quantization_level(config: Mapping[str, Any]) -> str:
    """DMR's "MOSTLY_Q4_K_M" as Ollama writes it ("Q4_K_M")."""
    return str(config.get("quantization") or "").removeprefix("MOSTLY_")


def model_details(config: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's `details` object of a model."""
    family = str(config.get("architecture") or "")
    return {
        "parent_model": "",
        "format": str(config.get("format") or "gguf"),
        "family": family,
        "families": [family] if family else None,
        "parameter_size": str(config.get("parameters") or ""),
        "quantization_level": quantization_level(config),
    }


def context_length(config: Mapping[str, Any]) -> int | None:
    """The context llama-server is started with by default: config.context_size, else the
    GGUF's `<architecture>.context_length`."""
    size = config.get("context_size")
    if isinstance(size, int) and size > 0:
        return size
    gguf = config.get("gguf") or {}
    raw = gguf.get(f"{config.get('architecture') or 'llama'}.context_length")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def capabilities(architecture: str, keys: Sequence[str], template: str, vision: bool) -> list[str]:
    """Ollama's capabilities, from the GGUF keys and the chat template (as Ollama reads them)."""
    found = [] if architecture in ENCODER_ARCHITECTURES else ["completion"]
    if architecture in ENCODER_ARCHITECTURES or f"{architecture}.pooling_type" in keys:
        found.append("embedding")
    if vision:
        found.append("vision")
    if "tools" in template:
        found.append("tools")
    if "<think>" in template or "enable_thinking" in template or "reasoning_content" in template:
        found.append("thinking")
    return found


def gguf_value(value: object) -> object:
    """A GGUF header value as JSON for /api/show's model_info (strings decoded)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):
        return [gguf_value(item) for item in value]
    return value


# -- answers ----------------------------------------------------------------------------------


@dataclass
class Reply:
    """An OpenAI answer (streamed chunks, or one whole completion) gathered for Ollama."""

    content: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    """Tool calls by index: ID, name and the JSON text of their arguments, as they stream in."""
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)

    def feed(self, chunk: Mapping[str, Any]) -> tuple[str, str]:
        """Take one chunk (or a whole answer); return the text and the thinking it adds."""
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = dict(chunk["usage"])
        if isinstance(chunk.get("timings"), Mapping):
            self.timings = dict(chunk["timings"])
        text, thought = "", ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or choice.get("message") or {}
            text += delta.get("content") or choice.get("text") or ""
            thought += delta.get("reasoning_content") or ""
            for position, call in enumerate(delta.get("tool_calls") or ()):
                index = call.get("index", position)
                entry = self.calls.setdefault(index, {"id": "", "name": "", "args": ""})
                entry["id"] = entry["id"] or call.get("id") or ""
                function = call.get("function") or {}
                entry["name"] += function.get("name") or ""
                entry["args"] += function.get("arguments") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        self.content.append(text)
        self.thinking.append(thought)
        return text, thought

    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls in Ollama's form: arguments as an object, no IDs or types."""
        calls = []
        for index, call in sorted(self.calls.items()):
            try:
                arguments = json.loads(call["args"]) if call["args"].strip() else {}
            except ValueError:
                arguments = {"arguments": call["args"]}  # not JSON: kept, not lost
            function = {"index": index, "name": call["name"], "arguments": arguments}
            calls.append(
                {"id": call["id"], "function": function} if call["id"] else {"function": function}
            )
        return calls

    def statistics(self, seconds: float) -> dict[str, Any]:
        """Ollama's closing fields: done_reason, token counts, durations in nanoseconds.

        Args:
            seconds: The whole request's time; what llama-server did not spend on the prompt
                and the answer is counted as loading (queueing and the model load).
        """
        prompt_tokens = self.usage.get("prompt_tokens", self.timings.get("prompt_n"))
        eval_tokens = self.usage.get("completion_tokens", self.timings.get("predicted_n"))
        prompt_ms = self.timings.get("prompt_ms")
        eval_ms = self.timings.get("predicted_ms")
        prompt_ms = prompt_ms if isinstance(prompt_ms, int | float) else None
        eval_ms = eval_ms if isinstance(eval_ms, int | float) else None
        stats: dict[str, Any] = {
            "done_reason": _DONE_REASONS.get(self.finish_reason or "stop", self.finish_reason),
            "total_duration": _ns(seconds),
            "load_duration": _ns(seconds - ((prompt_ms or 0) + (eval_ms or 0)) / 1000),
        }
        if isinstance(prompt_tokens, int):
            stats["prompt_eval_count"] = prompt_tokens
        if prompt_ms is not None:
            stats["prompt_eval_duration"] = _ns(prompt_ms / 1000)
        if isinstance(eval_tokens, int):
            stats["eval_count"] = eval_tokens
        if eval_ms is not None:
            stats["eval_duration"] = _ns(eval_ms / 1000)
        return stats


@dataclass(frozen=True)
class AnswerShape:
    """Ollama's answer objects of one request: chat ("message") or generate ("response")."""

    model: str
    """The model as the request named it (Ollama echoes it)."""
    chat: bool

    def answer(
        self,
        text: str,
        thinking: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        *,
        done: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """One answer object (a streamed part, or the whole answer when `done`)."""
        answer: dict[str, Any] = {"model": self.model, "created_at": go_time(time.time())}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            answer["message"] = message
        else:
            answer["response"] = text
            if thinking:
                answer["thinking"] = thinking
        return {**answer, "done": done, **extra}


def _ns(seconds: float) -> int:
    return max(0, round(seconds * NS_PER_SECOND))


def embeddings(answer: Mapping[str, Any], dimensions: int | None) -> list[list[float]]:
    """The vectors of an OpenAI embeddings answer, in input order; cut to `dimensions` and
    normalised again when asked (Ollama's `dimensions`)."""
    data = sorted(answer.get("data") or (), key=lambda item: item.get("index", 0))
    vectors = [list(item.get("embedding") or ()) for item in data]
    if dimensions is None:
        return vectors
    cut = [vector[:dimensions] for vector in vectors]
    norms = [math.sqrt(sum(x * x for x in vector)) or 1.0 for vector in cut]
    return [[x / norm for x in vector] for vector, norm in zip(cut, norms, strict=True)]


def pull_statuses(event: PullProgressEvent) -> list[dict[str, Any]]:
    """A pull's progress as Ollama's status objects ("pulling 1a2b3c4d5e6f", …, "success")."""
    if isinstance(event, PullProgressed):
        status = f"pulling {digest_hex(event.layer)[:12]}"
        return [{"status": status, "digest": event.layer, "total": event.size,
                 "completed": event.current}]  # fmt: skip
    if isinstance(event, PullFinished):
        return [{"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                {"status": "success"}]  # fmt: skip
    return [{"error": event.message}]
