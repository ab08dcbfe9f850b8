"""Scheduler decisions with plain data: serve, join, queue, start and evict LRU idle, refuse."""

from __future__ import annotations

import math

from modelrunner.core.inference.scheduler import (
    Busy,
    Join,
    Need,
    Queue,
    Refuse,
    Request,
    Resources,
    RunnerState,
    RunnerView,
    Scheduler,
    Serve,
    Start,
    Wait,
    expired,
    human_bytes,
    next_expiry,
    preview,
)

GB = 10**9


def runner(
    key: str,
    *,
    ram: float = 1,
    last_used: float = 0.0,
    in_use: int = 0,
    state: RunnerState = RunnerState.IDLE,
    keep_alive: float | None = None,
    waiting: int = 0,
    vram: float = 0,
) -> RunnerView[str]:
    return RunnerView(
        key=key,
        name=f"ai/{key}",
        state=state,
        in_use=in_use,
        slots=4,
        waiting=waiting,
        last_used=last_used,
        need=Need(int(ram * GB), int(vram * GB)),
        keep_alive=keep_alive,
    )


def ask(key: str, ram: float, vram: float = 0) -> Request[str]:
    return Request(key, f"ai/{key}", Need(int(ram * GB), int(vram * GB)))


def test_a_model_that_fits_starts_without_evicting() -> None:
    decision = Scheduler().decide(ask("new", 2), [runner("a")], Resources(ram_free=3 * GB))
    assert decision == Start("new", evict=())


def test_short_memory_evicts_the_least_recently_used_idle_runner_that_frees_enough() -> None:
    running = [runner("old", ram=2, last_used=10), runner("recent", ram=4, last_used=50)]
    decision = Scheduler().decide(ask("new", 5), running, Resources(ram_free=3 * GB))
    assert decision == Start("new", evict=("old",))


def test_it_evicts_several_when_one_is_not_enough_oldest_first() -> None:
    running = [
        runner("c", ram=2, last_used=30),
        runner("a", ram=1, last_used=10),
        runner("b", ram=1, last_used=20),
    ]
    decision = Scheduler().decide(ask("new", 3), running, Resources(ram_free=1 * GB))
    assert decision == Start("new", evict=("a", "b"))


def test_an_unneeded_old_pick_is_kept_when_a_newer_one_alone_frees_enough() -> None:
    running = [runner("tiny", ram=0.5, last_used=1), runner("big", ram=8, last_used=2)]
    decision = Scheduler().decide(ask("new", 6), running, Resources(ram_free=0))
    assert decision == Start("new", evict=("big",))


def test_a_busy_runner_is_never_evicted_the_request_waits() -> None:
    running = [runner("busy", ram=6, last_used=0, in_use=1, state=RunnerState.BUSY)]
    decision = Scheduler().decide(ask("new", 5), running, Resources(ram_free=2 * GB))
    assert isinstance(decision, Wait)
    assert "ai/busy" in decision.reason


def test_busy_ones_are_skipped_and_an_idle_one_goes_instead() -> None:
    running = [
        runner("busy", ram=4, last_used=0, in_use=2, state=RunnerState.BUSY),
        runner("idle", ram=4, last_used=99),
    ]
    decision = Scheduler().decide(ask("new", 4), running, Resources(ram_free=1 * GB))
    assert decision == Start("new", evict=("idle",))


def test_a_model_too_big_for_everything_is_refused_when_the_check_is_on() -> None:
    running = [runner("a", ram=1)]
    decision = Scheduler().decide(ask("huge", 100), running, Resources(ram_free=4 * GB))
    assert isinstance(decision, Refuse)
    assert "not enough memory to load ai/huge" in decision.message
    assert "100.0 GB" in decision.message
    assert "5.0 GB can be made free" in decision.message


def test_with_the_check_off_it_frees_what_it_can_and_tries() -> None:
    running = [runner("a", ram=1, last_used=2), runner("b", ram=1, last_used=1)]
    scheduler = Scheduler(memory_check=False)
    decision = scheduler.decide(ask("huge", 100), running, Resources(ram_free=4 * GB))
    assert decision == Start("huge", evict=("b", "a"), fits=False)


def test_the_runner_limit_evicts_the_lru_idle_runner_even_with_memory_to_spare() -> None:
    running = [runner("a", last_used=5), runner("b", last_used=1)]
    decision = Scheduler(max_runners=2).decide(ask("c", 1), running, Resources(ram_free=50 * GB))
    assert decision == Start("c", evict=("b",))


def test_the_runner_limit_with_only_busy_runners_waits() -> None:
    running = [runner("a", in_use=1, state=RunnerState.BUSY)]
    decision = Scheduler(max_runners=1).decide(ask("c", 1), running, Resources(ram_free=50 * GB))
    assert isinstance(decision, Wait)


def test_a_crashed_runner_goes_first_and_frees_a_place() -> None:
    running = [
        runner("idle", last_used=0),
        runner("dead", last_used=50, state=RunnerState.CRASHED, ram=0),
    ]
    decision = Scheduler(max_runners=2).decide(ask("c", 1), running, Resources(ram_free=50 * GB))
    assert decision == Start("c", evict=("dead",))


def test_gpu_memory_is_a_second_budget() -> None:
    running = [runner("cpu", ram=4, last_used=0), runner("gpu", ram=0.1, vram=6, last_used=9)]
    resources = Resources(ram_free=10 * GB, vram_free=2 * GB)
    decision = Scheduler().decide(ask("new", 0.1, vram=7), running, resources)
    assert decision == Start("new", evict=("gpu",))


def test_a_ready_runner_with_a_free_slot_serves() -> None:
    running = [runner("a", in_use=3, state=RunnerState.BUSY)]
    assert Scheduler().decide(ask("a", 1), running, Resources(0)) == Serve("a")


def test_a_newcomer_queues_behind_waiting_requests_even_when_a_slot_is_free() -> None:
    """Strict FIFO: a freed slot belongs to the first in line, never to a request just in."""
    running = [runner("a", in_use=3, state=RunnerState.BUSY, waiting=1)]
    assert Scheduler().decide(ask("a", 1), running, Resources(0)) == Queue("a", 1)


def test_the_same_model_in_another_mode_is_another_runner() -> None:
    """Keys are opaque: (model, mode) pairs are separate runners, counted against the limit."""
    running = [
        RunnerView(("m", "completion"), "ai/m", RunnerState.IDLE, last_used=1),
        RunnerView(("x", "completion"), "ai/x", RunnerState.IDLE, last_used=2),
    ]
    request = Request(("m", "embedding"), "ai/m")
    decision = Scheduler(max_runners=2).decide(request, running, Resources(10 * GB))
    assert decision == Start(("m", "embedding"), evict=(("m", "completion"),))


def test_a_loading_model_is_joined() -> None:
    running = [runner("a", state=RunnerState.STARTING)]
    assert Scheduler().decide(ask("a", 1), running, Resources(0)) == Join("a")


def test_full_slots_queue_until_the_queue_is_full() -> None:
    scheduler = Scheduler(queue_limit=2)
    full = runner("a", in_use=4, state=RunnerState.BUSY, waiting=1)
    assert scheduler.decide(ask("a", 1), [full], Resources(0)) == Queue("a", 1)
    fuller = runner("a", in_use=4, state=RunnerState.BUSY, waiting=2)
    assert scheduler.decide(ask("a", 1), [fuller], Resources(0)) == Busy("a", 2)


def test_a_crashed_model_is_started_again_in_its_own_place() -> None:
    running = [runner("a", state=RunnerState.CRASHED, ram=0)]
    decision = Scheduler(max_runners=1).decide(ask("a", 1), running, Resources(10 * GB))
    assert decision == Start("a", evict=())


def test_a_running_model_is_decided_without_a_memory_reading() -> None:
    """decide_running answers for a loading, loaded or stopping runner (the hot path of every
    request reads no memory); only a model that must start needs `decide` and Resources."""
    scheduler = Scheduler()
    assert scheduler.decide_running(ask("a", 1), [runner("a")]) == Serve("a")
    loading = [runner("a", state=RunnerState.STARTING)]
    assert scheduler.decide_running(ask("a", 1), loading) == Join("a")
    stopping = [runner("a", state=RunnerState.STOPPING)]
    assert isinstance(scheduler.decide_running(ask("a", 1), stopping), Wait)
    for absent in ([], [runner("b")], [runner("a", state=RunnerState.CRASHED)]):
        assert scheduler.decide_running(ask("a", 1), absent) is None


def test_the_preview_describes_the_decision() -> None:
    running = [runner("old", ram=2, last_used=10), runner("older", ram=2, last_used=5)]
    request = ask("new", 5)
    resources = Resources(ram_free=int(1.5 * GB))
    decision = Scheduler().decide(request, running, resources)
    shown = preview(decision, request, running, resources)
    assert decision == Start("new", evict=("older", "old"))
    assert shown.evict == ("ai/older", "ai/old")
    assert shown.action == "start"
    assert shown.fits
    assert (
        shown.message == "loading ai/new would stop ai/older and ai/old; needs 5.0 GB, 1.5 GB free"
    )


def test_the_preview_of_a_refusal_does_not_fit() -> None:
    request = ask("huge", 100)
    decision = Scheduler().decide(request, [], Resources(GB))
    shown = preview(decision, request, [], Resources(GB))
    assert (shown.action, shown.fits, shown.evict) == ("refuse", False, ())


def test_idle_runners_expire_after_their_keep_alive() -> None:
    running = [
        runner("default", last_used=100),
        runner("zero", last_used=100, keep_alive=0),
        runner("forever", last_used=0, keep_alive=-1),
        runner("busy", last_used=0, in_use=1, state=RunnerState.BUSY),
        runner("short", last_used=100, keep_alive=10),
    ]
    assert expired(running, now=100, idle_timeout=300) == ["zero"]
    assert expired(running, now=111, idle_timeout=300) == ["zero", "short"]
    assert expired(running, now=10**9, idle_timeout=300) == ["default", "zero", "short"]
    assert next_expiry(running, idle_timeout=300) == 100
    assert next_expiry([runner("f", keep_alive=-1)], idle_timeout=300) is None
    assert expired([runner("f", keep_alive=math.inf)], now=10**12, idle_timeout=1) == []


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (512, 1_200_000_000, 340_000_000)] == [
        "512 B", "1.2 GB", "340.0 MB",
    ]  # fmt: skip


def test_a_runner_just_stopped_but_not_yet_forgotten_is_waited_for() -> None:
    """A failed load stops its llama-server before the pool drops the entry: a request seeing
    it then must wait for that (the pool has nothing to start in its place), never be told to
    start it, which the pool cannot do and would ask again at once, forever."""
    stopped = [runner("a", state=RunnerState.STOPPED)]
    scheduler = Scheduler()
    assert isinstance(scheduler.decide_running(ask("a", 1), stopped), Wait)
    assert isinstance(scheduler.decide(ask("a", 1), stopped, Resources(10 * GB)), Wait)
