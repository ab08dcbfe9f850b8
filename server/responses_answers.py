"""Responses API answers made from llama-server's chat completions: the Response object, its
output items and usage, and the streamed event sequence (`ResponseEvents`). Pure: no I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelrunner.server.responses_requests import ResponsesRequest, new_id

SSE = "text/event-stream"


def sse_frame(event: Mapping[str, Any]) -> bytes:
    """One server-sent event: its type as the event name, the event as data."""
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


@dataclass
class ResponseShape:
    """What every Response object of one request repeats: its ID, time and the request's
    echoed fields."""

    request: ResponsesRequest
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self,
        status: str,
        output: list[dict[str, Any]] | None = None,
        *,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        """The Response object in `status` ("in_progress", "completed", "incomplete", "failed")."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.request.model,
            "output": output or [],
            "previous_response_id": self.request.previous_response_id,
            "store": self.request.store,
            **self.request.echoed,
            "usage": usage,
        }


def usage(chat_usage: object) -> dict[str, Any] | None:
    """llama-server's chat `usage` in the Responses API's terms."""
    if not isinstance(chat_usage, Mapping):
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


def upstream_failure(status: int, raw: bytes) -> dict[str, Any]:
    """A response's `error` from llama-server's error answer: its message, and as code its
    error type (a word, where llama-server's `code` is the HTTP status) or "upstream_error"."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    if isinstance(error, Mapping):
        code = next(
            (error[key] for key in ("code", "type") if isinstance(error.get(key), str)),
            "upstream_error",
        )
        return {"code": code, "message": str(error.get("message") or text)}
    return {"code": "upstream_error", "message": text or f"llama-server answered {status}"}


def text_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message output item of one output_text part."""
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [text_part(text)]}  # fmt: skip


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    call_id: str, name: str, arguments: str, status: str = "completed", item_id: str = ""
) -> dict[str, Any]:
    """A function_call output item."""
    return {"id": item_id or new_id("fc"), "type": "function_call", "status": status,
            "call_id": call_id, "name": name, "arguments": arguments}  # fmt: skip


def incomplete_reason(finish_reason: object) -> str | None:
    """Why a response stopped short: only the token limit ("length") makes it incomplete."""
    return "max_output_tokens" if finish_reason == "length" else None


def completed_response(shape: ResponseShape, completion: Mapping[str, Any]) -> dict[str, Any]:
    """The Response object of a whole (non-streamed) chat completion.

    Raises:
        ValueError: The completion has no choice with a message.
    """
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ValueError("llama-server's answer has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise ValueError("llama-server's answer has no message")
    reason = incomplete_reason(choice.get("finish_reason"))
    status = "incomplete" if reason else "completed"
    output = []
    text = message.get("content") or ""
    calls = message.get("tool_calls") or []
    if text or not calls:
        output.append(text_item(new_id("msg"), str(text), status))
    for call in calls:
        function = call.get("function") or {}
        output.append(
            call_item(
                call.get("id") or new_id("call"),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                status,
            )
        )
    return shape.response(status, output, usage=usage(completion.get("usage")), incomplete=reason)


def assistant_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output as the chat message(s) a next turn sends back."""
    if not output:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    for item in output:
        if item["type"] == "message":
            message["content"] += "".join(part.get("text", "") for part in item["content"])
        elif item["type"] == "function_call":
            call = {"name": item["name"], "arguments": item["arguments"]}
            message.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function", "function": call}
            )
    return [message]


class ResponseEvents:
    """The streamed Responses events of one chat completion stream, fed chunk by chunk.

    Items are opened and finished one at a time, as OpenAI streams them: text goes to an
    assistant message item, each tool call to a function_call item; whichever is open is
    finished when the other kind starts, or at the end. Every event carries a
    `sequence_number`, counted from 0.
    """

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.output: list[dict[str, Any]] = []
        """Finished output items, in order."""
        self.final: dict[str, Any] | None = None
        """The last Response object (completed, incomplete or failed), once there is one."""
        self._sequence = 0
        self._open: dict[str, Any] | None = None
        self._open_call_index: int | None = None
        self._finish_reason: object = None
        self._usage: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        """response.created and response.in_progress."""
        response = self.shape.response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events of one chat.completion.chunk (none for a usage-only chunk)."""
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self._usage = usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(str(delta["content"]))
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
        return events

    def _index(self) -> int:
        return len(self.output)

    def _open_text(self) -> list[dict[str, Any]]:
        item_id = new_id("msg")
        self._open = {"type": "message", "id": item_id, "text": ""}
        added = {**text_item(item_id, "", "in_progress"), "content": []}
        return [
            self._event("response.output_item.added", output_index=self._index(), item=added),
            self._event("response.content_part.added", item_id=item_id,
                        output_index=self._index(), content_index=0, part=text_part("")),
        ]  # fmt: skip

    def _text(self, text: str) -> list[dict[str, Any]]:
        events = []
        if self._open is not None and self._open["type"] != "message":
            events += self._finish_open("completed")
        if self._open is None:
            events += self._open_text()
        assert self._open is not None
        self._open["text"] += text
        events.append(self._event("response.output_text.delta", item_id=self._open["id"],
                                  output_index=self._index(), content_index=0, delta=text,
                                  logprobs=[]))  # fmt: skip
        return events

    def _call(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        events = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        starts = self._open is None or self._open["type"] != "function_call"
        if not starts and index != self._open_call_index:
            starts = True
        if starts:
            if self._open is not None:
                events += self._finish_open("completed")
            item = call_item(call.get("id") or new_id("call"), str(function.get("name") or ""),
                             "", "in_progress")  # fmt: skip
            self._open, self._open_call_index = item, index
            added = self._event("response.output_item.added", output_index=self._index(),
                                item=dict(item))  # fmt: skip
            events.append(added)
        assert self._open is not None
        if function.get("name") and not self._open["name"]:
            self._open["name"] = str(function["name"])
        if function.get("arguments"):
            self._open["arguments"] += str(function["arguments"])
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=self._open["id"], output_index=self._index(),
                                      delta=str(function["arguments"])))  # fmt: skip
        return events

    def _finish_open(self, status: str) -> list[dict[str, Any]]:
        item, self._open, self._open_call_index = self._open, None, None
        if item is None:
            return []
        index = self._index()
        if item["type"] == "message":
            text = item["text"]
            done = text_item(item["id"], text, status)
            events = [
                self._event("response.output_text.done", item_id=item["id"], output_index=index,
                            content_index=0, text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item["id"], output_index=index,
                            content_index=0, part=text_part(text)),
            ]  # fmt: skip
        else:
            done = {**item, "status": status}
            events = [
                self._event("response.function_call_arguments.done", item_id=item["id"],
                            output_index=index, name=item["name"], arguments=item["arguments"]),
            ]  # fmt: skip
        events.append(self._event("response.output_item.done", output_index=index, item=done))
        self.output.append(done)
        return events

    def finish(self) -> list[dict[str, Any]]:
        """The end of a stream that ended well: the open item finished, then
        response.completed (response.incomplete when the token limit cut it short)."""
        reason = incomplete_reason(self._finish_reason)
        status = "incomplete" if reason else "completed"
        events = self._finish_open(status)
        if not self.output:  # nothing was said: an empty message, as a whole answer has
            events += self._open_text()
            events += self._finish_open(status)
        self.final = self.shape.response(status, self.output, usage=self._usage, incomplete=reason)
        events.append(self._event(f"response.{status}", response=self.final))
        return events

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        """The open item finished as incomplete, an `error` event and response.failed (with
        what was said so far)."""
        events = self._finish_open("incomplete")
        error = {"code": code, "message": message}
        self.final = self.shape.response("failed", self.output, usage=self._usage, error=error)
        return [
            *events,
            self._event("error", code=code, message=message, param=None),
            self._event("response.failed", response=self.final),
        ]
