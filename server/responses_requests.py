"""Responses API requests, read and translated to a chat completion request for llama-server.

As DMR does (pkg/responses), the Responses API is served as a translation onto
/v1/chat/completions: `instructions` become a system message, `input` (a string or a list of
items) chat messages, function tools and `text.format` their chat forms. What the translation
cannot do is refused with a 400 that names the field. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelrunner.server.errors import ApiError
from modelrunner.server.ollama_requests import keep_alive_seconds

NOT_SUPPORTED = "is not supported by Docker Model Runner Responses compatibility layer"
"""DMR's words for a feature the translation does not serve (its clients may look for them)."""

SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_ID_ALPHABET = string.ascii_lowercase + string.digits

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
"""Responses roles as chat roles (llama-server's chat templates know no "developer")."""


def new_id(prefix: str) -> str:
    """An ID as DMR makes them: the prefix, "_" and 24 characters of [a-z0-9]."""
    return f"{prefix}_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class ResponsesRequest:
    """A Responses create request, checked and translated."""

    model: str
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    instructions: str | None = None
    input_items: list[dict[str, Any]] = field(default_factory=list)
    """The input as Responses items, each with an ID (what GET …/input_items lists)."""
    input_messages: list[dict[str, Any]] = field(default_factory=list)
    """The input as chat messages."""
    chat_fields: dict[str, Any] = field(default_factory=dict)
    """Sampling, limits, tools and response_format, as chat completion fields."""
    echoed: dict[str, Any] = field(default_factory=dict)
    """Request fields the Response object repeats (tools, text, metadata, …)."""
    keep_alive: float | None = None
    """Ours, as on every inference route: seconds the model stays loaded once idle."""

    def chat_payload(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat completion request: instructions, `history` (the previous responses'
        conversation), then this input."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [*system, *history, *self.input_messages],
            **self.chat_fields,
            "stream": self.stream,
        }
        if self.stream:
            payload["stream_options"] = {"include_usage": True}
        return payload


def parse_request(body: Mapping[str, Any]) -> ResponsesRequest:
    """Check a create request's body and translate it.

    Raises:
        ApiError: 400 for a missing model, a malformed field or an unsupported feature.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, 'model is required: set "model" to a model name, e.g. "ai/smollm2"')
    _refuse_unsupported(body)
    instructions = _optional(body, "instructions", str)
    items = _input_items(body.get("input"))
    chat_fields = {
        **_sampling_fields(body),
        **_tools_fields(body.get("tools"), body.get("tool_choice")),
        **_text_fields(body.get("text")),
    }
    parallel = _optional(body, "parallel_tool_calls", bool)
    if parallel is not None:
        chat_fields["parallel_tool_calls"] = parallel
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise ApiError(400, '"metadata" must be an object of string values')
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, Mapping):
        raise ApiError(400, '"reasoning" must be an object, e.g. {"effort": "low"}')
    echoed = {
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": dict(metadata or {}),
        "parallel_tool_calls": True if parallel is None else parallel,
        "reasoning": {"effort": (reasoning or {}).get("effort"), "summary": None},
        "temperature": body.get("temperature"),
        "text": {"format": {"type": "text"}, **(body.get("text") or {})},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": list(body.get("tools") or []),
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "user": body.get("user"),
    }
    previous = _optional(body, "previous_response_id", str)
    stream, store = _optional(body, "stream", bool), _optional(body, "store", bool)
    return ResponsesRequest(
        model=model.strip(),
        stream=bool(stream),
        store=store is not False,
        previous_response_id=previous or None,
        instructions=instructions or None,
        input_items=items,
        input_messages=chat_messages(items),
        chat_fields=chat_fields,
        echoed=echoed,
        keep_alive=keep_alive_seconds(body.get("keep_alive")),
    )


def _optional(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise ApiError(400, f'"{key}" must be {_KIND_NAMES[kind]}, not {value!r}')
    return value


_KIND_NAMES = {str: "a string", bool: "true or false", int: "a whole number"}


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """DMR's list of what the translation cannot serve; an empty or null value is accepted."""
    refused = {
        "include": bool(body.get("include")),
        "stream_options": body.get("stream_options") is not None,
        "top_logprobs": body.get("top_logprobs") not in (None, 0),
        "truncation": body.get("truncation") not in (None, "", "disabled"),
        "background": body.get("background") is True,
        "conversation": body.get("conversation") is not None,
        "prompt": body.get("prompt") is not None,
        "service_tier": body.get("service_tier") not in (None, ""),
        "safety_identifier": body.get("safety_identifier") not in (None, ""),
    }
    for name, present in refused.items():
        if present:
            hint = " (continue a conversation with previous_response_id)" * (name == "conversation")
            raise ApiError(400, f"{name} {NOT_SUPPORTED}{hint}")


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f'"{key}" must be a number, not {value!r}')
    return value


def _sampling_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        value = _number(body, key)
        if value is not None:
            fields[key] = value
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ApiError(
                400, f'"max_output_tokens" must be a positive whole number, not {limit!r}'
            )
        fields["max_tokens"] = limit
    user = _optional(body, "user", str)
    if user:
        fields["user"] = user
    return fields


def _tools_fields(tools: object, choice: object) -> dict[str, Any]:
    """Function tools (flat, or nested under "function" as chat has them) and tool_choice."""
    fields: dict[str, Any] = {}
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(tool, Mapping) for tool in tools):
            raise ApiError(400, '"tools" must be a list of tool objects')
        if tools:
            fields["tools"] = [_chat_tool(tool) for tool in tools]
    if choice is None:
        return fields
    if choice in ("auto", "none", "required"):
        fields["tool_choice"] = choice
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        nested = choice.get("function")
        name = choice.get("name") or (nested.get("name") if isinstance(nested, Mapping) else None)
        if not isinstance(name, str) or not name:
            raise ApiError(400, 'tool_choice of type "function" needs the function\'s "name"')
        fields["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif isinstance(choice, Mapping):
        raise ApiError(400, f'tool_choice type "{choice.get("type")}" {NOT_SUPPORTED}')
    else:
        raise ApiError(
            400, f'"tool_choice" must be "auto", "none", "required" or an object, not {choice!r}'
        )
    return fields


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    kind = tool.get("type")
    if kind != "function":
        raise ApiError(400, f'tool type "{kind}" {NOT_SUPPORTED} (only "function" tools are)')
    nested = tool.get("function")
    function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else tool
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, 'a function tool needs a "name"')
    chat: dict[str, Any] = {"name": name}
    for key in ("description", "parameters", "strict"):
        if function.get(key) is not None:
            chat[key] = function[key]
    return {"type": "function", "function": chat}


def _text_fields(text: object) -> dict[str, Any]:
    """`text.format` as a chat response_format (text.verbosity is only echoed)."""
    if text is None:
        return {}
    if not isinstance(text, Mapping):
        raise ApiError(400, '"text" must be an object, e.g. {"format": {"type": "json_object"}}')
    form = text.get("format")
    if form is None:
        return {}
    kind = form.get("type") if isinstance(form, Mapping) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind != "json_schema":
        raise ApiError(400, f'text.format type {kind!r} is not supported: use "text", '
                            '"json_object" or "json_schema"')  # fmt: skip
    assert isinstance(form, Mapping)
    name = form.get("name")
    if not isinstance(name, str) or not SCHEMA_NAME.match(name):
        raise ApiError(400, "text.format.name must be 1 to 64 letters, digits, '_' or '-'")
    schema = form.get("schema")
    if not isinstance(schema, Mapping):
        raise ApiError(400, "text.format.schema is required and must be a JSON object")
    json_schema: dict[str, Any] = {"name": name, "schema": dict(schema)}
    for key in ("description", "strict"):
        if form.get(key) is not None:
            json_schema[key] = form[key]
    return {"response_format": {"type": "json_schema", "json_schema": json_schema}}


# -- input -------------------------------------------------------------------------------------


def _input_items(value: object) -> list[dict[str, Any]]:
    """The input as Responses items, checked, each with an ID and a status."""
    if value is None or value == "":
        raise ApiError(400, "input is required: a string, or a list of input items")
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise ApiError(400, f'"input" must be a string or a list of items, not {value!r}')
    items = []
    for number, item in enumerate(value):
        where = f"input[{number}]"
        if not isinstance(item, Mapping):
            raise ApiError(400, f"{where} must be a JSON object")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            items.append(_message_item(item, where))
        elif kind == "function_call":
            items.append(_function_call_item(item, where))
        elif kind == "function_call_output":
            items.append(_function_output_item(item, where))
        elif kind == "reasoning":
            continue  # a previous answer's reasoning, passed back: never produced here
        else:
            raise ApiError(400, f"{where}: input item type {kind!r} {NOT_SUPPORTED}")
    return items


def _message_item(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise ApiError(400, f'{where}: "role" must be user, system, developer or assistant')
    default_part = "output_text" if role == "assistant" else "input_text"
    content = item.get("content")
    if isinstance(content, str):
        parts = [{"type": default_part, "text": content}]
    elif isinstance(content, list):
        parts = [_content_part(part, f"{where}.content[{n}]") for n, part in enumerate(content)]
    else:
        raise ApiError(400, f'{where}: "content" must be a string or a list of content parts')
    prefix = "msg"
    return {"id": _item_id(item, prefix), "type": "message", "role": role, "content": parts,
            "status": "completed"}  # fmt: skip


def _content_part(part: object, where: str) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise ApiError(400, f"{where} must be a JSON object")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise ApiError(400, f'{where}: "text" must be a string')
        out: dict[str, Any] = {"type": "input_text" if kind == "text" else kind, "text": text}
        if kind == "output_text":
            out["annotations"] = list(part.get("annotations") or [])
        return out
    if kind in ("input_image", "image_url"):
        url = part.get("image_url")
        if isinstance(url, Mapping):
            url = url.get("url")
        if not isinstance(url, str) or not url:
            detail = " (file_id is not: send a data: or http(s) URL)" if part.get("file_id") else ""
            raise ApiError(400, f'{where}: an image needs "image_url" as a URL{detail}')
        return {"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"}
    raise ApiError(400, f"{where}: content type {kind!r} {NOT_SUPPORTED}")


def _function_call_item(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise ApiError(400, f'{where}: a function_call needs "call_id" and "name"')
    arguments = item.get("arguments") or "{}"
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": _item_id(item, "fc"), "type": "function_call", "call_id": call_id,
            "name": name, "arguments": arguments, "status": "completed"}  # fmt: skip


def _function_output_item(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise ApiError(400, f'{where}: a function_call_output needs the "call_id" it answers')
    output = item.get("output")
    if isinstance(output, list):
        output = "".join(str(part.get("text", "")) for part in output if isinstance(part, Mapping))
    if not isinstance(output, str):
        raise ApiError(400, f'{where}: "output" must be a string')
    return {"id": _item_id(item, "fco"), "type": "function_call_output", "call_id": call_id,
            "output": output, "status": "completed"}  # fmt: skip


def _item_id(item: Mapping[str, Any], prefix: str) -> str:
    given = item.get("id")
    return given if isinstance(given, str) and given else new_id(prefix)


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses items as chat messages: a function_call joins the assistant message before it
    (or starts one), a function_call_output is the tool's answer to its call."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if item["type"] == "message":
            messages.append({"role": _ROLES[item["role"]], "content": _chat_content(item)})
        elif item["type"] == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": ""}
                messages.append(last)
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
    return messages


def _chat_content(item: Mapping[str, Any]) -> str | list[dict[str, Any]]:
    """A message's parts as chat content: a string when it is all text (assistant content
    always is), else text and image_url parts."""
    parts = item["content"]
    texts = [part["text"] for part in parts if "text" in part]
    if item["role"] == "assistant" or len(texts) == len(parts):
        return "".join(texts)
    return [
        {"type": "text", "text": part["text"]}
        if "text" in part
        else {"type": "image_url", "image_url": {"url": part["image_url"]}}
        for part in parts
    ]
