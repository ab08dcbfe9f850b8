"""DMR's `_configure`: parse a ConfigureRequest and keep each model's runner config per mode.

The request mixes key styles exactly as DMR's does ("context-size", "runtime-flags",
"raw-runtime-flags", "speculative": {"draft_model", "num_tokens", "min_acceptance_rate"},
"keep_alive", "llamacpp": {"reasoning-budget"}). Every validation failure is InvalidInput (400);
DMR answers 500 for them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modelrunner.core.errors import Conflict, InvalidInput
from modelrunner.core.inference.modes import (
    COMPLETION,
    EMBEDDING,
    FALLS_BACK_TO_COMPLETION,
    IMAGE_GENERATION,
    MODES,
)
from modelrunner.core.inference.runtime_flags import (
    LLAMA_CPP,
    sets_flag,
    split_raw_flags,
    validate_runtime_flags,
)

FOREVER = -1.0
"""keep_alive seconds meaning "never unload"."""

MAX_KEEP_ALIVE = 292 * 365 * 24 * 3600
"""Go's longest duration, in seconds: DMR and Ollama clients cannot mean more."""

INT32_MAX = 2**31 - 1
"""The largest number llama-server reads for a count (it parses them with std::stoi)."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Speculative:
    """Speculative decoding with a draft model."""

    draft_model: str
    """A reference to a stored model."""
    num_tokens: int | None = None
    """--spec-draft-n-max: tokens drafted per step."""
    min_acceptance_rate: float | None = None
    """--spec-draft-p-min: minimum draft probability."""


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """How one model's llama-server is started (in one mode)."""

    context_size: int | None = None
    runtime_flags: tuple[str, ...] = ()
    reasoning_budget: int | None = None
    """llamacpp.reasoning-budget: -1 unlimited, 0 no thinking."""
    speculative: Speculative | None = None
    keep_alive: float | None = None
    """Seconds idle before unloading; 0 = right after the request, FOREVER = never."""

    def to_api(self) -> dict[str, Any]:
        """DMR's JSON of a stored config (the "Config" of GET /engines/_configure)."""
        body: dict[str, Any] = {}
        if self.context_size is not None:
            body["context-size"] = self.context_size
        if self.runtime_flags:
            body["runtime-flags"] = list(self.runtime_flags)
        if self.speculative is not None:
            spec: dict[str, Any] = {"draft_model": self.speculative.draft_model}
            if self.speculative.num_tokens is not None:
                spec["num_tokens"] = self.speculative.num_tokens
            if self.speculative.min_acceptance_rate is not None:
                spec["min_acceptance_rate"] = self.speculative.min_acceptance_rate
            body["speculative"] = spec
        if self.keep_alive is not None:
            body["keep_alive"] = format_keep_alive(self.keep_alive)
        if self.reasoning_budget is not None:
            body["llamacpp"] = {"reasoning-budget": self.reasoning_budget}
        return body


@dataclass(frozen=True, slots=True)
class ConfigureRequest:
    """A parsed POST /engines[/{backend}]/_configure body."""

    model: str
    """The reference as sent."""
    mode: str
    config: RunnerConfig
    backend: str = LLAMA_CPP


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One stored config, for GET /engines/_configure."""

    model_id: str
    model: str
    """The reference it was configured under."""
    mode: str
    config: RunnerConfig
    backend: str = LLAMA_CPP

    def to_api(self) -> dict[str, Any]:
        """DMR's ModelConfigEntry: capitalised keys (Go struct without json tags)."""
        return {
            "Backend": self.backend,
            "Model": self.model,
            "ModelID": self.model_id,
            "Mode": self.mode,
            "Config": self.config.to_api(),
        }


def parse_keep_alive(raw: object) -> float:
    """A keep_alive string ("5m", "1h30m", "0", "-1", "-1m") as seconds; negative = FOREVER.

    Raises:
        InvalidInput: It is not a string, not a Go duration, or longer than Go's longest.
    """
    if not isinstance(raw, str):
        raise InvalidInput(f'keep_alive must be a string such as "5m", "0" or "-1", not {raw!r}')
    text = raw.strip()
    if text in ("0", "-0", "+0"):
        return 0.0
    if text == "-1":
        return FOREVER
    negative = text.startswith("-")
    body = text.lstrip("+-")
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise InvalidInput(f'invalid keep_alive {raw!r}: use a duration such as "5m", "0" or "-1"')
    if total > MAX_KEEP_ALIVE:
        raise InvalidInput(f"keep_alive {raw!r} is out of range (at most ~292 years)")
    return FOREVER if negative and total > 0 else total


def format_keep_alive(seconds: float) -> str:
    """Go's Duration.String() of a keep_alive ("5m0s", "1h30m0s", "0s"); "-1" for FOREVER."""
    if seconds < 0:
        return "-1"
    if seconds == 0:
        return "0s"
    if seconds < 1:
        for unit, scale in (("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
            if seconds >= scale:
                return f"{_trim(seconds / scale)}{unit}"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{_trim(secs)}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def _integer(name: str, raw: object) -> int:
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or not math.isfinite(raw)
        or int(raw) != raw
    ):
        raise InvalidInput(f"{name} must be a whole number, not {raw!r}")
    return int(raw)


def _object(name: str, raw: object) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{name} must be a JSON object, not {raw!r}")
    return raw


def _speculative(raw: object) -> Speculative | None:
    if raw is None:
        return None
    spec = _object("speculative", raw)
    draft = spec.get("draft_model")
    if not isinstance(draft, str) or not draft.strip():
        raise InvalidInput("speculative.draft_model must name a model")
    num_tokens = spec.get("num_tokens")
    if (
        num_tokens is not None
        and not 0 < _integer("speculative.num_tokens", num_tokens) <= INT32_MAX
    ):
        raise InvalidInput(f"speculative.num_tokens must be between 1 and {INT32_MAX}")
    rate = spec.get("min_acceptance_rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1
    ):
        raise InvalidInput(f"speculative.min_acceptance_rate must be between 0 and 1, not {rate!r}")
    return Speculative(
        draft.strip(),
        None if num_tokens is None else int(num_tokens),
        None if rate is None else float(rate),
    )


MAX_CONTEXT_SIZE = INT32_MAX
"""DMR reads context-size into an int32."""


def parse_configure_request(payload: object, backend: str = LLAMA_CPP) -> ConfigureRequest:
    """Validate a `_configure` body for `backend`.

    Raises:
        InvalidInput: Anything malformed or unsafe, with a message naming the field or flag.
    """
    body = _object("the request body", payload)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidInput('model is required: set "model" to a model name, e.g. "ai/smollm2"')
    if "runtime-flags" in body and body["runtime-flags"] is not None:
        raw_flags = body["runtime-flags"]
        if not isinstance(raw_flags, list):
            raise InvalidInput("runtime-flags must be a list of strings")
        flags = validate_runtime_flags(raw_flags, backend)
    elif isinstance(body.get("raw-runtime-flags"), str):
        flags = validate_runtime_flags(split_raw_flags(body["raw-runtime-flags"]), backend)
    elif body.get("raw-runtime-flags") is not None:
        raise InvalidInput("raw-runtime-flags must be a string")
    else:
        flags = ()
    mode = body.get("mode")
    if mode is None or mode == "":
        mode = EMBEDDING if sets_flag(flags, "--embeddings", "--embedding") else COMPLETION
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidInput(f"invalid mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == IMAGE_GENERATION and backend == LLAMA_CPP:
        raise InvalidInput("llama.cpp does not support mode 'image-generation'")
    context_size = body.get("context-size")
    if context_size is not None:
        context_size = _integer("context-size", context_size)
        if context_size < -1 or context_size > MAX_CONTEXT_SIZE:
            raise InvalidInput(
                f"context-size must be between 1 and {MAX_CONTEXT_SIZE} tokens, "
                "or -1 for the model's own"
            )
    budget = None
    if body.get("llamacpp") is not None:
        raw_budget = _object("llamacpp", body["llamacpp"]).get("reasoning-budget")
        if raw_budget is not None:
            budget = _integer("llamacpp.reasoning-budget", raw_budget)
            if not -1 <= budget <= INT32_MAX:
                raise InvalidInput(
                    f"llamacpp.reasoning-budget must be -1 (unlimited), or 0 to {INT32_MAX}"
                )
    keep_alive = None if body.get("keep_alive") is None else parse_keep_alive(body["keep_alive"])
    config = RunnerConfig(
        context_size=context_size,
        runtime_flags=flags,
        reasoning_budget=budget,
        speculative=_speculative(body.get("speculative")),
        keep_alive=keep_alive,
    )
    return ConfigureRequest(model=model.strip(), mode=mode, config=config, backend=backend)


class RunnerConfigs:
    """Stored configs, keyed by (model ID, mode); what the pool starts llama-server with."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], ConfigEntry] = {}

    def set(self, model_id: str, request: ConfigureRequest) -> bool:
        """Store `request`'s config for `model_id`; False if the same config was stored already."""
        key = (model_id, request.mode)
        current = self._entries.get(key)
        if current is not None and current.config == request.config:
            return False
        self._entries[key] = ConfigEntry(
            model_id, request.model, request.mode, request.config, request.backend
        )
        return True

    def get(self, model_id: str, mode: str = COMPLETION) -> RunnerConfig | None:
        """The config a runner of `model_id` in `mode` starts with, if one was stored.

        Reranking and image generation use the completion config when they have none (as DMR).
        """
        entry = self._entries.get((model_id, mode))
        if entry is None and mode in FALLS_BACK_TO_COMPLETION:
            entry = self._entries.get((model_id, COMPLETION))
        return None if entry is None else entry.config

    def modes_using(self, model_id: str, mode: str) -> tuple[str, ...]:
        """The modes whose runners start with the config stored (or to be stored) under `mode`."""
        if mode != COMPLETION:
            return (mode,)
        borrowers = (m for m in FALLS_BACK_TO_COMPLETION if (model_id, m) not in self._entries)
        return (COMPLETION, *borrowers)

    def forget(self, model_ids: Sequence[str] | None = None) -> int:
        """Drop the configs of `model_ids` (every mode), or all of them; return how many."""
        keys = [k for k in self._entries if model_ids is None or k[0] in model_ids]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def entries(self, model_id: str | None = None) -> list[ConfigEntry]:
        """Every stored config, or those of one model, in the order they were set."""
        return [e for e in self._entries.values() if model_id is None or e.model_id == model_id]


BUSY_STATES = frozenset({"starting", "busy"})
"""Runner states in which a config change is refused (409), as DMR refuses an in-use runner."""


class RunnerInfoLike(Protocol):
    @property
    def model_id(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def state(self) -> str: ...


def _in_use(info: RunnerInfoLike) -> bool:
    return info.state in BUSY_STATES or bool(getattr(info, "in_use", 0))


class PoolLike(Protocol):
    """What configuring needs from RunnerPool."""

    def running(self) -> Sequence[RunnerInfoLike]: ...
    async def unload(
        self, model_ids: Sequence[str] | None = None, *, modes: Collection[str] | None = None
    ) -> int: ...


async def apply_configure(
    request: ConfigureRequest,
    *,
    resolve: Callable[[str], Awaitable[str]],
    pool: PoolLike,
    configs: RunnerConfigs,
) -> bool:
    """Store `request`'s config; the model's idle runners in the modes it configures stop, so
    the next request starts them with it (a completion config also serves reranking runners
    that have none of their own).

    Args:
        resolve: Turns a reference into a stored model ID (raising ModelNotFound).

    Returns:
        Whether anything changed (an identical config is a no-op).

    Raises:
        ModelNotFound: The model or the speculative draft model is not stored.
        Conflict: A runner the config applies to is loading or serving a request.
    """
    model_id = await resolve(request.model)
    if request.config.speculative is not None:
        await resolve(request.config.speculative.draft_model)
    stored = configs.entries(model_id)
    if any(e.mode == request.mode and e.config == request.config for e in stored):
        return False
    modes = configs.modes_using(model_id, request.mode)
    if any(i.model_id == model_id and i.mode in modes and _in_use(i) for i in pool.running()):
        raise Conflict(
            f"runner already active: {request.model} ({request.mode}) is loading or serving "
            "a request"
        )
    await pool.unload([model_id], modes=modes)
    return configs.set(model_id, request)
