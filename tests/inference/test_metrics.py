"""The metrics exposition: relabelled llama.cpp series, our registry, one parseable text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from modelrunner.core.events import RunnerStateChanged
from modelrunner.core.inference.metrics import EngineMetrics, add_labels, merge

LLAMA = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 12
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing{slot="0",note="a \\"quoted\\" } value"} 1
"""


def render(families: list) -> str:  # type: ignore[type-arg]
    return "".join(family.render() for family in families)


def test_every_sample_gets_the_model_label_and_families_merge_by_name() -> None:
    text = render(
        merge([add_labels(LLAMA, {"model": "smollm2"}), add_labels(LLAMA, {"model": "tiny"})])
    )
    assert text.count("# TYPE llamacpp:prompt_tokens_total counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    tokens = families["llamacpp:prompt_tokens"]
    assert [(s.labels, s.value) for s in tokens.samples] == [
        ({"model": "smollm2"}, 12.0), ({"model": "tiny"}, 12.0)]  # fmt: skip
    [first, _] = families["llamacpp:requests_processing"].samples
    assert first.labels == {"slot": "0", "note": 'a "quoted" } value', "model": "smollm2"}


def test_our_registry_renders_counters_and_histograms() -> None:
    metrics = EngineMetrics()
    metrics.observe_request('ai/x"y', 200, 0.02, first_byte_seconds=0.01)
    metrics.observe_request('ai/x"y', 200, 0.2)
    metrics.observe_generation("ai/x", 48, 0.5)
    metrics.observe_eviction("ai/x", "memory")
    metrics.on_event(RunnerStateChanged("sha256:a", "ai/smollm2:135M-Q4_1", "starting"))
    metrics.on_event(RunnerStateChanged("sha256:a", "ai/smollm2:135M-Q4_1", "ready"))
    metrics.on_event(RunnerStateChanged("sha256:b", "ai/tiny:latest", "crashed"))
    text = render(metrics.families())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [requests] = families["modelrunner_requests"].samples
    assert requests.labels == {"model": 'ai/x"y', "mode": "completion", "status": "200"}
    assert requests.value == 2
    latency = {s.name: s for s in families["modelrunner_request_duration_seconds"].samples
               if "le" not in s.labels or s.labels["le"] in ("0.025", "+Inf")}  # fmt: skip
    assert latency["modelrunner_request_duration_seconds_count"].value == 2
    buckets = [s for s in families["modelrunner_request_duration_seconds"].samples
               if s.labels.get("le") in ("0.025", "+Inf")]  # fmt: skip
    assert [b.value for b in buckets] == [1, 2]
    assert families["modelrunner_generated_tokens"].samples[0].value == 48
    [loads] = families["modelrunner_runner_loads"].samples
    assert loads.labels == {"model": "ai/smollm2:135M-Q4_1", "mode": "completion"}
    assert families["modelrunner_runner_failures"].samples[0].labels == {
        "model": "ai/tiny:latest", "mode": "completion"}  # fmt: skip
    assert families["modelrunner_runner_evictions"].samples[0].labels["reason"] == "memory"


def test_an_empty_registry_is_still_a_valid_exposition() -> None:
    text = render(EngineMetrics().families())
    assert {f.name for f in text_string_to_metric_families(text)} >= {"modelrunner_requests"}


def test_pulled_bytes_count_new_bytes_once_and_queue_depth_is_a_gauge() -> None:
    from modelrunner.core.events import PullFinished, PullProgressed

    own = EngineMetrics()

    def progressed(layer: str, current: int) -> PullProgressed:
        return PullProgressed("ai/x:latest", layer, 1000, current, 2000, current, "downloading")

    for event in (
        progressed("sha256:a", 300),  # first report: 300 bytes were already on disk (resumed)
        progressed("sha256:a", 700),
        progressed("sha256:a", 1000),
        progressed("sha256:b", 0),
        progressed("sha256:b", 1000),
        PullFinished("ai/x:latest", "sha256:id", cached=False),
        progressed("sha256:a", 1000),  # a later pull of the same tag starts a new count
    ):
        own.on_event(event)
    text = "".join(family.render() for family in own.families())
    assert 'modelrunner_pulled_bytes_total{model="ai/x:latest"} 1700' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "modelrunner_pulled_bytes" in families


async def test_queue_depth_and_runner_states_are_gauges() -> None:
    from modelrunner.core.inference.metrics import exposition

    waiting = {("ai/smollm2:latest", "embedding"): 3}
    text = await exposition(None, [], EngineMetrics(), {"busy": 1}, waiting)  # type: ignore[arg-type]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [depth] = families["modelrunner_queue_depth"].samples
    assert (depth.labels, depth.value) == ({"model": "ai/smollm2:latest", "mode": "embedding"}, 3)
    assert families["modelrunner_runners"].type == "gauge"
