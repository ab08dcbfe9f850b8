"""DMR's progress lines (exact fields, order, escaping) and the per-layer speed/ETA meter."""

from __future__ import annotations

import json

from modelrunner.core.distribution.progress import LayerMeter, dmr_progress_line
from modelrunner.core.events import PullFailed, PullFinished, PullProgressed


def test_progress_line_fields_and_order() -> None:
    event = PullProgressed(
        "ai/x:latest", "sha256:" + "a" * 64, 2016, 1024, 2016, 1 << 20, "downloading"
    )
    line = dmr_progress_line(event)
    assert line is not None
    assert line.endswith(b"\n")
    assert line == (
        b'{"type":"progress","message":"Downloaded: 1.00 MB","total":2016,'
        b'"layer":{"id":"sha256:' + b"a" * 64 + b'","size":2016,"current":1024},"mode":"pull"}\n'
    )


def test_success_error_and_silence() -> None:
    assert json.loads(dmr_progress_line(PullFinished("r", "sha256:x", cached=False)) or b"") == {
        "type": "success", "message": "Model pulled successfully", "total": 0,
        "layer": {"size": 0, "current": 0}, "mode": "pull",
    }  # fmt: skip
    cached = json.loads(
        dmr_progress_line(PullFinished("r", "id", cached=True, size="1.5GiB")) or b""
    )
    assert cached["message"] == "Using cached model: 1.5GiB"
    error = json.loads(dmr_progress_line(PullFailed("r", "model not found", 404)) or b"")
    assert (error["type"], error["message"]) == ("error", "Error: model not found")
    queued = PullProgressed("r", "sha256:" + "b" * 64, 1, 0, 1, 0, "queued")
    assert dmr_progress_line(queued) is None


def test_html_escaping_like_go() -> None:
    line = dmr_progress_line(PullFailed("r", "bad <name> & 'quote'", 400), html_escape=True)
    assert line == (
        b"{&#34;type&#34;:&#34;error&#34;,&#34;message&#34;:&#34;Error: bad \\u003cname\\u003e "
        b"\\u0026 &#39;quote&#39;&#34;,&#34;total&#34;:0,&#34;layer&#34;:{&#34;size&#34;:0,"
        b"&#34;current&#34;:0},&#34;mode&#34;:&#34;pull&#34;}\n"
    )


def test_meter_speed_average_eta_and_pacing() -> None:
    now = [100.0]
    meter = LayerMeter(10_000_000, 2_000_000, clock=lambda: now[0])
    unknown = meter.eta
    assert unknown is None
    for _ in range(4):
        now[0] += 0.5
        meter.update(meter.current + 1_000_000)
    assert meter.speed == 2_000_000
    assert meter.average_speed == 2_000_000  # the resumed 2 MB do not count
    assert meter.eta == 2.0
    assert meter.due()
    meter.mark_emitted()
    now[0] += 0.05
    meter.update(meter.current + 1000)
    assert not meter.due()  # 50 ms and 1000 bytes later
    now[0] += 0.06
    assert meter.due()
    meter.update(10_000_000)
    assert meter.due()
    assert meter.eta == 0.0
