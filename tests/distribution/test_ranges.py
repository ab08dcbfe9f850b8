"""The range plan of a partial blob: pieces, the hashable frontier, the sidecar record."""

from __future__ import annotations

from pathlib import Path

from modelrunner.core.distribution.ranges import MAX_SEGMENTS, RangePlan


def test_split_cuts_pieces_after_the_prefix_and_persists_them(tmp_path: Path) -> None:
    sidecar = tmp_path / "blob.incomplete.ranges"
    plan = RangePlan.split(sidecar, 100, 10, 30)
    assert [(s.start, s.end, s.done) for s in plan.segments] == [
        (0, 40, 10), (40, 70, 40), (70, 100, 70),
    ]  # fmt: skip
    assert plan.on_disk == 10
    assert plan.frontier == 10
    plan.record(1, 55)
    plan.close()
    loaded = RangePlan.load(sidecar, 100)
    assert loaded is not None
    assert [s.done for s in loaded.segments] == [10, 55, 70]
    assert loaded.on_disk == 25
    loaded.close()


def test_a_huge_blob_gets_bigger_pieces_not_more(tmp_path: Path) -> None:
    size = 64 << 30
    plan = RangePlan.split(tmp_path / "s", size, 0, 16 << 20)
    assert len(plan.segments) == MAX_SEGMENTS
    assert plan.segments[-1].end == size
    plan.close()


def test_frontier_follows_finished_pieces_and_goes_back_when_one_restarts(
    tmp_path: Path,
) -> None:
    plan = RangePlan.split(tmp_path / "s", 90, 0, 30)
    plan.record(1, 60)  # the second piece first: nothing contiguous yet
    assert plan.frontier == 0
    assert plan.on_disk == 30
    plan.record(0, 30)
    assert plan.frontier == 60  # both first pieces, the third not begun
    plan.record(2, 75)
    assert plan.frontier == 75
    plan.record(0, 0)  # a restarted piece
    assert plan.frontier == 0
    assert plan.on_disk == 45
    plan.record(0, 30)
    plan.record(2, 90)
    assert plan.frontier == 90
    assert plan.finished
    plan.close()


def test_damaged_or_foreign_sidecars_are_ignored(tmp_path: Path) -> None:
    sidecar = tmp_path / "s"
    RangePlan.split(sidecar, 100, 0, 50).close()
    assert RangePlan.load(sidecar, 101) is None  # another size
    sidecar.write_bytes(sidecar.read_bytes()[:-3])
    assert RangePlan.load(sidecar, 100) is None
    assert RangePlan.load(tmp_path / "missing", 100) is None
