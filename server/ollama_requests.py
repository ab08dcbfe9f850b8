"""Ollama request bodies, read and translated to what llama-server takes (OpenAI's fields).

Options, `format`, `think`, images and tool calls are mapped; every malformed field is an
ApiError 400 that names it.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelrunner.core.inference.configure import MAX_KEEP_ALIVE, parse_keep_alive
from modelrunner.server.errors import ApiError
from modelrunner.server.request_bodies import MAX_BODY_BYTES, parse_json_object, read_body

if TYPE_CHECKING:
    from starlette.requests import Request

SAMPLING_OPTIONS = (
    "temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
    "presence_penalty", "frequency_penalty", "seed", "mirostat", "mirostat_tau", "mirostat_eta",
)  # fmt: skip
"""Ollama options llama-server takes under the same name in an OpenAI request."""

THINKING_LEVELS = ("low", "medium", "high", "max")

_IMAGE_TYPES = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lG", "image/gif"),
                ("UklGR", "image/webp"), ("Qk", "image/bmp"))  # fmt: skip


async def json_body(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request's JSON object (400 when it is missing, not JSON or not an object)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        raise ApiError(400, "missing request body")
    return parse_json_object(raw)


def model_field(body: Mapping[str, Any]) -> str:
    """The model a request names: `model`, else the legacy `name` (400 when neither is given)."""
    for key in ("model", "name"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f'"{key}" must be a string, not {value!r}')
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ApiError(400, 'model is required: set "model" to a model name, e.g. "smollm2"')


def keep_alive_seconds(raw: object) -> float | None:
    """Ollama's keep_alive: a duration string ("5m", "0", "-1") or seconds; None when absent."""
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if not math.isfinite(raw) or abs(raw) > MAX_KEEP_ALIVE:
            raise ApiError(400, f"keep_alive {raw!r} is out of range (seconds, at most ~292 years)")
        return float(raw)
    return parse_keep_alive(raw)


def stream_field(body: Mapping[str, Any]) -> bool:
    """Ollama's `stream`: true unless the request says false."""
    value = body.get("stream")
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ApiError(400, f'"stream" must be true or false, not {value!r}')
    return value


def text_field(body: Mapping[str, Any], key: str) -> str:
    """An optional string field ("" when absent)."""
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f'"{key}" must be a string, not {value!r}')
    return value


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"options.{name} must be a number, not {value!r}")
    return value


def _whole(name: str, value: object) -> int:
    number = _number(name, value)
    if int(number) != number:
        raise ApiError(400, f"options.{name} must be a whole number, not {value!r}")
    return int(number)


def options_fields(options: object) -> tuple[dict[str, Any], int | None]:
    """Ollama's `options` as OpenAI/llama-server request fields, and num_ctx (None if unset).

    Options that only matter when loading a model (num_gpu, num_thread, use_mmap, …) and those
    llama-server has no use for are ignored, as Ollama ignores options a runner does not take.
    """
    if options is None:
        return {}, None
    if not isinstance(options, Mapping):
        raise ApiError(400, f'"options" must be a JSON object, not {options!r}')
    fields: dict[str, Any] = {}
    for name in SAMPLING_OPTIONS:
        if options.get(name) is not None:
            value = options[name]
            fields[name] = (
                _whole(name, value) if name in ("top_k", "seed") else _number(name, value)
            )
    if options.get("num_predict") is not None:
        limit = _whole("num_predict", options["num_predict"])
        if limit >= 0:  # -1 (no limit) and -2 (fill the context) are llama-server's default
            fields["max_tokens"] = limit
    if options.get("num_keep") is not None:
        fields["n_keep"] = _whole("num_keep", options["num_keep"])
    stop = options.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, f"options.stop must be a string or a list of strings, not {stop!r}")
        fields["stop"] = stop
    num_ctx = None
    if options.get("num_ctx") is not None:
        num_ctx = _whole("num_ctx", options["num_ctx"])
        if not 0 < num_ctx < 2**31:
            raise ApiError(
                400, f"options.num_ctx must be a positive number of tokens, not {num_ctx}"
            )
    return fields, num_ctx


def format_fields(value: object) -> dict[str, Any]:
    """Ollama's `format` ("json" or a JSON schema) as an OpenAI `response_format`."""
    if value is None or value == "":
        return {}
    if value == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(value, Mapping):
        schema = {"name": "response", "schema": dict(value)}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise ApiError(400, f'"format" must be "json" or a JSON schema object, not {value!r}')


def think_fields(value: object) -> dict[str, Any]:
    """Ollama's `think` (true, false or a level) as llama-server's per-request reasoning fields:
    thinking is parsed out into `reasoning_content` (Ollama's `thinking`), and the chat template
    is told whether to think (and how hard)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        kwargs: dict[str, Any] = {"enable_thinking": value}
    elif isinstance(value, str) and value in THINKING_LEVELS:
        kwargs = {"enable_thinking": True, "reasoning_effort": value}
    else:
        levels = ", ".join(f'"{level}"' for level in THINKING_LEVELS)
        raise ApiError(400, f'"think" must be true, false or one of {levels}, not {value!r}')
    fields: dict[str, Any] = {"chat_template_kwargs": kwargs}
    if kwargs["enable_thinking"]:
        fields["reasoning_format"] = "deepseek"
    return fields


def image_url(image: object, where: str) -> dict[str, Any]:
    """An Ollama image (base64, no prefix) as an OpenAI image_url content part (a data: URL)."""
    if not isinstance(image, str) or not image:
        raise ApiError(400, f"{where}: an image must be a base64 string")
    if image.startswith("data:"):
        return {"type": "image_url", "image_url": {"url": image}}
    try:
        base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}: an image is not valid base64") from None
    mime = next((kind for prefix, kind in _IMAGE_TYPES if image.startswith(prefix)), "image/jpeg")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{image}"}}


def openai_messages(messages: object) -> list[dict[str, Any]]:
    """Ollama chat messages as OpenAI's: images become content parts, tool calls get IDs and
    their arguments a JSON string, and a tool answer is linked to the call it answers."""
    if not isinstance(messages, list):
        raise ApiError(400, f'"messages" must be a list of messages, not {messages!r}')
    converted: list[dict[str, Any]] = []
    ids = (f"call_{n}" for n in itertools.count())
    unanswered: list[tuple[str, str]] = []  # (call ID, function name), oldest first
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        if not isinstance(message, Mapping):
            raise ApiError(400, f"{where} must be a JSON object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ApiError(400, f'{where}: "role" is required (system, user, assistant or tool)')
        content = text_field(message, "content") if "content" in message else ""
        out: dict[str, Any] = {"role": role, "content": content}
        images = message.get("images") or []
        if not isinstance(images, list):
            raise ApiError(400, f'{where}: "images" must be a list of base64 strings')
        if images:
            parts = [{"type": "text", "text": content}] if content else []
            out["content"] = parts + [image_url(image, where) for image in images]
        if message.get("thinking"):
            out["reasoning_content"] = text_field(message, "thinking")
        if message.get("tool_calls"):
            out["tool_calls"] = _openai_tool_calls(message["tool_calls"], where, ids, unanswered)
        if role == "tool":
            out["tool_call_id"] = _answered_call(message, unanswered, where)
        converted.append(out)
    return converted


def _openai_tool_calls(
    calls: object, where: str, ids: Any, unanswered: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise ApiError(400, f'{where}: "tool_calls" must be a list')
    converted = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ApiError(400, f"{where}: a tool call needs a function with a name")
        arguments = function.get("arguments") or {}
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        call_id = call.get("id") if isinstance(call.get("id"), str) else next(ids)
        unanswered.append((call_id, function["name"]))
        converted.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
    return converted


def _answered_call(
    message: Mapping[str, Any], unanswered: list[tuple[str, str]], where: str
) -> str:
    """The ID of the call a tool message answers: its own tool_call_id, else the oldest
    unanswered call of its tool_name, else the oldest unanswered call."""
    given = message.get("tool_call_id")
    if isinstance(given, str) and given:
        unanswered[:] = [pending for pending in unanswered if pending[0] != given]
        return given
    name = text_field(message, "tool_name")
    for pending in unanswered:
        if not name or pending[1] == name:
            unanswered.remove(pending)
            return pending[0]
    return f"call_{where}"


def tools_field(value: object) -> dict[str, Any]:
    """Ollama's `tools` (OpenAI's format already); each needs a function with a name, which
    llama-server would refuse with a 500."""
    if value is None or value == []:
        return {}
    if not isinstance(value, list) or not all(isinstance(tool, Mapping) for tool in value):
        raise ApiError(400, f'"tools" must be a list of tool objects, not {value!r}')
    for number, tool in enumerate(value):
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ApiError(400, f'tools[{number}] needs a "function" with a "name"')
    return {"tools": value}


def embed_inputs(value: object) -> list[str]:
    """/api/embed's `input`: a string or a list of strings (an empty string is none, as in
    Ollama)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ApiError(400, f'"input" must be a string or a list of strings, not {value!r}')


def dimensions_field(value: object) -> int | None:
    """/api/embed's `dimensions`: a positive whole number, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ApiError(400, f'"dimensions" must be a positive whole number, not {value!r}')
    return value
