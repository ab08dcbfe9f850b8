"""GET /metrics: every runner's llama.cpp series with `model` and `mode` labels, plus our own.

`model` is always the model's name (its first tag, normalised: "ai/smollm2:135M-Q4_1"), however
requests spelt it, and `mode` tells a model's completion, embedding and reranking runners apart.

Our own series live in a tiny in-process registry (counters and histograms with labels), so the
runtime needs no prometheus_client. Each ready runner's `/metrics` is fetched over its Unix socket
in parallel; one that fails or has no `--metrics` (LLAMA_ARGS replaced the defaults) is skipped,
and the answer is still a valid exposition.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from modelrunner.core.errors import CoreError, InvalidReference
from modelrunner.core.events import PullFailed, PullFinished, PullProgressed, RunnerStateChanged
from modelrunner.core.inference.modes import COMPLETION
from modelrunner.core.references import normalize

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RATE_BUCKETS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

_SAMPLE_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*")

LabelValues = tuple[str, ...]


def escape_label(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Family:
    """One metric family: HELP, TYPE and its sample lines (already rendered)."""

    name: str
    kind: str = "untyped"
    help: str = ""
    samples: list[str] = field(default_factory=list)

    def render(self) -> str:
        head = f"# HELP {self.name} {self.help}\n" if self.help else ""
        return head + f"# TYPE {self.name} {self.kind}\n" + "".join(s + "\n" for s in self.samples)


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Family:
        name = f"{self.name}_total"
        samples = [
            f"{name}{_labels(self.label_names, k)} {_number(v)}" for k, v in self.values.items()
        ]
        return Family(name, "counter", self.help, samples)


class Histogram:
    """Observations counted into cumulative buckets per label set."""

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.bounds = (*sorted(buckets), math.inf)
        self.series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        counts, total = self.series.setdefault(labels, ([0] * len(self.bounds), [0.0]))
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                counts[index] += 1
        total[0] += value

    def family(self) -> Family:
        samples: list[str] = []
        for key, (counts, total) in self.series.items():
            for bound, count in zip(self.bounds, counts, strict=True):
                le = f'le="{_number(bound)}"'
                samples.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {count}")
            samples.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total[0])}")
            samples.append(f"{self.name}_count{_labels(self.label_names, key)} {counts[-1]}")
        return Family(self.name, "histogram", self.help, samples)


class EngineMetrics:
    """modelrunner's own series: requests, latency, generation speed, loads and evictions."""

    def __init__(self) -> None:
        self.requests = Counter(
            "modelrunner_requests", "Inference requests answered, by model, mode and HTTP status.",
            ("model", "mode", "status"),
        )  # fmt: skip
        self.request_seconds = Histogram(
            "modelrunner_request_duration_seconds",
            "Time from receiving an inference request to the end of its answer.",
            ("model", "mode"), LATENCY_BUCKETS,
        )  # fmt: skip
        self.first_token_seconds = Histogram(
            "modelrunner_time_to_first_token_seconds",
            "Time from receiving an inference request to its first answer bytes.",
            ("model", "mode"), LATENCY_BUCKETS,
        )  # fmt: skip
        self.tokens = Counter(
            "modelrunner_generated_tokens", "Tokens generated, by model.", ("model",)
        )
        self.tokens_per_second = Histogram(
            "modelrunner_generation_tokens_per_second",
            "Generation speed of each answer, in tokens per second.", ("model",), RATE_BUCKETS,
        )  # fmt: skip
        self.loads = Counter(
            "modelrunner_runner_loads", "llama-server starts that became ready.",
            ("model", "mode"),
        )  # fmt: skip
        self.load_seconds = Histogram(
            "modelrunner_runner_load_duration_seconds",
            "Time from starting llama-server to its first healthy answer.",
            ("model", "mode"), LOAD_BUCKETS,
        )  # fmt: skip
        self.failures = Counter(
            "modelrunner_runner_failures", "llama-servers that failed or crashed.",
            ("model", "mode"),
        )  # fmt: skip
        self.evictions = Counter(
            "modelrunner_runner_evictions", "Runners stopped to make room or when idle.",
            ("model", "mode", "reason"),
        )  # fmt: skip
        self.pulled_bytes = Counter(
            "modelrunner_pulled_bytes", "Bytes downloaded by pulls (resumed bytes count once).",
            ("model",),
        )  # fmt: skip
        self._starting: dict[tuple[str, str], float] = {}
        self._pull_seen: dict[tuple[str, str], int] = {}

    def observe_request(
        self,
        model: str,
        status: int,
        seconds: float,
        first_byte_seconds: float | None = None,
        *,
        mode: str = COMPLETION,
    ) -> None:
        """One inference request to a runner of `model` (its name) in `mode` finished."""
        self.requests.inc(model, mode, str(status))
        self.request_seconds.observe(seconds, model, mode)
        if first_byte_seconds is not None:
            self.first_token_seconds.observe(first_byte_seconds, model, mode)

    def observe_generation(self, model: str, tokens: int, seconds: float) -> None:
        """An answer of `tokens` tokens was generated in `seconds` (first to last token)."""
        self.tokens.inc(model, amount=tokens)
        if tokens > 0 and seconds > 0:
            self.tokens_per_second.observe(tokens / seconds, model)

    def observe_load(self, model: str, seconds: float, mode: str = COMPLETION) -> None:
        self.loads.inc(model, mode)
        self.load_seconds.observe(seconds, model, mode)

    def observe_eviction(self, model: str, reason: str, mode: str = COMPLETION) -> None:
        """A runner was stopped by the scheduler ("idle", "memory", "unload", ...)."""
        self.evictions.inc(model, mode, reason)

    def on_event(self, event: object) -> None:
        """Count loads and failures (RunnerStateChanged) and pulled bytes (PullProgressed)."""
        if isinstance(event, PullProgressed):
            key = (event.reference, event.layer)
            seen = self._pull_seen.setdefault(key, event.current)  # a resumed part is not new
            if event.current > seen:
                self.pulled_bytes.inc(model_label(event.reference), amount=event.current - seen)
                self._pull_seen[key] = event.current
            return
        if isinstance(event, PullFinished | PullFailed):
            for key in [k for k in self._pull_seen if k[0] == event.reference]:
                del self._pull_seen[key]
            return
        if not isinstance(event, RunnerStateChanged):
            return
        model, runner = model_label(event.reference), (event.model_id, event.mode)
        if event.state == "starting":
            self._starting[runner] = time.monotonic()
        elif event.state == "ready" and runner in self._starting:
            self.observe_load(model, time.monotonic() - self._starting.pop(runner), event.mode)
        elif event.state in ("failed", "crashed"):
            self._starting.pop(runner, None)
            self.failures.inc(model, event.mode)

    def families(self) -> list[Family]:
        series = (
            self.requests, self.request_seconds, self.first_token_seconds, self.tokens,
            self.tokens_per_second, self.loads, self.load_seconds, self.failures, self.evictions,
            self.pulled_bytes,
        )  # fmt: skip
        return [metric.family() for metric in series]


def model_label(reference: str) -> str:
    """A reference in the one spelling the `model` label uses (normalised; as is if unparsable)."""
    try:
        return normalize(reference)
    except InvalidReference:
        return reference


class RunnerLike(Protocol):
    """What a scrape needs from a running LlamaServer."""

    @property
    def socket_path(self) -> Path: ...
    @property
    def reference(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def ready(self) -> bool: ...
    @property
    def has_metrics(self) -> bool: ...


class RawResponse(Protocol):
    status: int

    async def read(self) -> bytes: ...
    async def aclose(self) -> None: ...


class UpstreamLike(Protocol):
    async def request(self, runner: RunnerLike, method: str, path: str) -> RawResponse: ...


def add_labels(text: str, labels: Mapping[str, str]) -> list[Family]:
    """Parse an exposition into families, adding `labels` to every sample."""
    families: dict[str, Family] = {}
    current: Family | None = None
    extra = ",".join(f'{name}="{escape_label(value)}"' for name, value in labels.items())
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                current = families.setdefault(parts[2], Family(parts[2]))
                text_part = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    current.help = text_part
                else:
                    current.kind = text_part or "untyped"
            continue
        match = _SAMPLE_NAME.match(line)
        if match is None:
            continue
        sample = match.group(0)
        rest = line[match.end() :]
        if rest.startswith("{"):
            own, rest = _split_labels(rest)
            labelled = f"{sample}{{{own + ',' if own else ''}{extra}}}{rest}"
        else:
            labelled = f"{sample}{{{extra}}}{rest}"
        owner = current if current is not None and _belongs(sample, current) else None
        if owner is None:
            owner = families.setdefault(sample, Family(sample))
        owner.samples.append(labelled)
    return list(families.values())


def _belongs(sample: str, family: Family) -> bool:
    suffixes = ("", "_bucket", "_sum", "_count", "_total", "_created")
    return any(sample == family.name + suffix for suffix in suffixes)


def _split_labels(rest: str) -> tuple[str, str]:
    """('a="x",b="y"', ' 1.0') from '{a="x",b="y"} 1.0', honouring quotes and escapes."""
    quoted = escaped = False
    for index, char in enumerate(rest):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            return rest[1:index].rstrip(","), rest[index + 1 :]
    raise ValueError(f"unterminated labels in {rest!r}")


def merge(groups: Iterable[Iterable[Family]]) -> list[Family]:
    """Families merged by name: samples appended, HELP and TYPE from the first one seen."""
    merged: dict[str, Family] = {}
    for families in groups:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                merged[family.name] = Family(
                    family.name, family.kind, family.help, list(family.samples)
                )
            else:
                target.samples.extend(family.samples)
    return list(merged.values())


SCRAPE_SECONDS = 10.0
"""How long one runner may take to answer /metrics (DMR: 10 s)."""


async def scrape(upstream: UpstreamLike, runner: RunnerLike) -> str | None:
    """One runner's /metrics text, or None (logged) when it does not answer properly."""
    try:
        async with asyncio.timeout(SCRAPE_SECONDS):
            response = await upstream.request(runner, "GET", "/metrics")
            try:
                body = await response.read()
            finally:
                await response.aclose()
    except (CoreError, OSError, TimeoutError) as error:
        log.info("no metrics from the runner of %s: %s", runner.reference, error)
        return None
    if response.status != 200:
        log.info("no metrics from the runner of %s: HTTP %s", runner.reference, response.status)
        return None
    return body.decode("utf-8", "replace")


async def exposition(
    upstream: UpstreamLike,
    runners: Sequence[RunnerLike],
    own: EngineMetrics,
    states: Mapping[str, int] | None = None,
    waiting: Mapping[tuple[str, str], int] | None = None,
) -> str:
    """The whole /metrics answer: each ready runner's series with `model` and `mode`, then ours.

    Args:
        runners: Every runner the pool holds; those not ready or without --metrics are skipped.
        states: How many runners are in each state, published as modelrunner_runners{state}.
        waiting: Requests queued for each (model, mode) runner, as
            modelrunner_queue_depth{model,mode}.
    """
    scraped = [r for r in runners if r.ready and r.has_metrics]
    texts = await asyncio.gather(*(scrape(upstream, runner) for runner in scraped))
    groups: list[list[Family]] = []
    for runner, text in zip(scraped, texts, strict=True):
        if text is None:
            continue
        try:
            labels = {"model": model_label(runner.reference), "mode": runner.mode}
            groups.append(add_labels(text, labels))
        except ValueError as error:
            log.warning("unreadable metrics from the runner of %s: %s", runner.reference, error)
    ours = own.families()
    if states is not None:
        gauge = Family("modelrunner_runners", "gauge", "llama-server processes, by state.")
        gauge.samples = [
            f'modelrunner_runners{{state="{escape_label(state)}"}} {count}'
            for state, count in states.items()
        ]
        ours.append(gauge)
    if waiting is not None:
        depth = Family("modelrunner_queue_depth", "gauge", "Requests waiting for a busy runner.")
        depth.samples = [
            f"modelrunner_queue_depth{_labels(('model', 'mode'), key)} {count}"
            for key, count in waiting.items()
        ]
        ours.append(depth)
    return "".join(family.render() for family in merge([*groups, ours]))
