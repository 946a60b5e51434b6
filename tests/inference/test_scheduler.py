"""The scheduler policy (pure, fake clock) and its async wrapper over the scripted engine."""

from __future__ import annotations

import pytest

from fablecast.inference.scheduler import Scheduler, SchedulerConfig, TokenBudgetExceeded
from fablecast.inference.types import (
    EngineBusy,
    EngineError,
)


def sched(**kw: object) -> Scheduler:
    cfg = SchedulerConfig(**kw)  # type: ignore[arg-type]
    return Scheduler.create(cfg, engine_concurrency=int(kw.get("max_running", 2) or 2))  # type: ignore[call-overload]


# -- admission -----------------------------------------------------------------------


def test_admits_up_to_max_running_then_queues() -> None:
    s = sched(max_running=2, max_running_per_room=5)
    assert s.submit("a", "r1", 10, 0.0).running
    assert s.submit("b", "r2", 10, 0.0).running
    c = s.submit("c", "r3", 10, 0.0)
    assert not c.running
    assert (s.running, s.queued) == (2, 1)


def test_release_admits_next() -> None:
    s = sched(max_running=1)
    s.submit("a", "r1", 10, 0.0)
    s.submit("b", "r2", 10, 0.0)
    admitted = s.release("a", 10, 1.0)
    assert [t.request_id for t in admitted] == ["b"]
    assert s.ticket("b") is not None and s.ticket("b").running  # type: ignore[union-attr]


def test_engine_concurrency_is_default_bound() -> None:
    s = Scheduler.create(SchedulerConfig(), engine_concurrency=3)
    assert s.max_running == 3


def test_per_room_cap() -> None:
    s = sched(max_running=4, max_running_per_room=1)
    assert s.submit("a", "r1", 10, 0.0).running
    assert not s.submit("b", "r1", 10, 0.0).running
    assert s.submit("c", "r2", 10, 0.0).running


def test_per_room_cap_skips_blocked_room_in_queue() -> None:
    s = sched(max_running=2, max_running_per_room=1)
    s.submit("a", "r1", 10, 0.0)
    s.submit("b", "r2", 10, 0.0)
    s.submit("a2", "r1", 10, 0.1)
    s.submit("c", "r3", 10, 0.2)
    admitted = s.release("b", 10, 1.0)
    assert [t.request_id for t in admitted] == ["c"]


def test_queue_full_raises_engine_busy() -> None:
    s = sched(max_running=1, max_queue=1)
    s.submit("a", "r1", 10, 0.0)
    s.submit("b", "r2", 10, 0.0)
    with pytest.raises(EngineBusy):
        s.submit("c", "r3", 10, 0.0)
    assert (s.running, s.queued) == (1, 1)


def test_engine_busy_is_engine_error() -> None:
    assert issubclass(EngineBusy, EngineError)


def test_zero_queue_refuses_when_full() -> None:
    s = sched(max_running=1, max_queue=0)
    s.submit("a", "r1", 10, 0.0)
    with pytest.raises(EngineBusy):
        s.submit("b", "r2", 10, 0.0)


def test_duplicate_id_rejected() -> None:
    s = sched(max_running=1)
    s.submit("a", "r1", 10, 0.0)
    with pytest.raises(ValueError):
        s.submit("a", "r1", 10, 0.0)


def test_bad_config_rejected() -> None:
    with pytest.raises(ValueError):
        SchedulerConfig(max_running=0)
    with pytest.raises(ValueError):
        SchedulerConfig(beat_token_budget=0)


# -- fairness --------------------------------------------------------------------------


def _drain(s: Scheduler, now: float) -> list[str]:
    """Run every request to completion one at a time; the order they ran in."""
    order: list[str] = []
    running = [t for t in list(s._tickets.values()) if t.running]
    while running:
        t = running.pop(0)
        order.append(t.room)
        running.extend(s.release(t.request_id, t.max_tokens, now))
    return order


def test_busy_room_does_not_starve_others() -> None:
    s = sched(max_running=1, max_running_per_room=1)
    s.submit("x0", "big", 100, 0.0)
    for i in range(1, 6):
        s.submit(f"x{i}", "big", 100, 0.0)
    s.submit("y", "small", 100, 0.1)
    order = _drain(s, 0.5)
    # The small room goes right after the big room's first request, not after all six.
    assert order.index("small") <= 2


def test_round_robin_between_equal_rooms() -> None:
    s = sched(max_running=1, max_running_per_room=1, max_queue=100)
    s.submit("first", "a", 50, 0.0)
    for i in range(3):
        s.submit(f"a{i}", "a", 50, 0.0)
        s.submit(f"b{i}", "b", 50, 0.0)
    order = _drain(s, 0.1)
    assert order[1:5] in (["b", "a", "b", "a"], ["a", "b", "a", "b"])
    assert order.count("a") == 4 and order.count("b") == 3


def test_audience_weight_favours_big_rooms() -> None:
    s = sched(max_running=1, max_running_per_room=1, max_queue=100, audience_weight=1.0)
    s.set_audience("big", 1000)
    s.set_audience("small", 1)
    assert s.weight("big") > s.weight("small") >= 1.0
    s.submit("blocker", "z", 10, 0.0)
    for i in range(6):
        s.submit(f"b{i}", "big", 50, 0.0)
        s.submit(f"s{i}", "small", 50, 0.0)
    order = _drain(s, 0.1)[1:9]
    assert order.count("big") > order.count("small") >= 1


def test_weight_is_capped() -> None:
    s = sched(max_running=1, max_weight=3.0)
    s.set_audience("huge", 10**9)
    assert s.weight("huge") == 3.0


def test_zero_audience_weight_means_equal() -> None:
    s = sched(max_running=1, audience_weight=0.0)
    s.set_audience("big", 1000)
    assert s.weight("big") == s.weight("other") == 1.0


def test_idle_room_gets_no_hoarded_credit() -> None:
    s = sched(max_running=1, max_running_per_room=1, max_queue=100)
    s.submit("a0", "a", 100, 0.0)
    for i in range(1, 5):
        s.submit(f"a{i}", "a", 100, 0.0)
    # Room a runs alone for a while...
    for i in range(3):
        s.release(f"a{i}", 100, float(i + 1))
    # ...then b arrives: it goes next, but only once before a gets a turn again.
    s.submit("b0", "b", 100, 4.0)
    s.submit("b1", "b", 100, 4.0)
    order = _drain(s, 4.5)
    assert order[:4] in (["a", "b", "a", "b"], ["a", "a", "b", "b"], ["a", "b", "b", "a"])


def test_urgent_deadline_goes_first() -> None:
    s = sched(max_running=1, max_running_per_room=1, urgent_within_s=2.0)
    s.submit("blocker", "z", 10, 0.0)
    s.submit("normal", "a", 10, 0.0)
    s.submit("late", "b", 10, 0.0, deadline=1.0)
    admitted = s.release("blocker", 10, 0.5)
    assert [t.request_id for t in admitted] == ["late"]


def test_far_deadline_is_not_urgent() -> None:
    s = sched(max_running=1, max_running_per_room=1, urgent_within_s=2.0)
    s.submit("blocker", "z", 10, 0.0)
    s.submit("normal", "a", 10, 0.0)
    s.submit("later", "b", 10, 0.0, deadline=100.0)
    admitted = s.release("blocker", 10, 0.5)
    assert [t.request_id for t in admitted] == ["normal"]


def test_earliest_deadline_first_among_urgent() -> None:
    s = sched(max_running=1, max_running_per_room=1, urgent_within_s=5.0)
    s.submit("blocker", "z", 10, 0.0)
    s.submit("d3", "a", 10, 0.0, deadline=3.0)
    s.submit("d2", "b", 10, 0.0, deadline=2.0)
    assert [t.request_id for t in s.release("blocker", 10, 0.1)] == ["d2"]


def test_aged_request_beats_urgent_ones() -> None:
    s = sched(max_running=1, max_running_per_room=1, max_wait_s=10.0, urgent_within_s=5.0)
    s.submit("blocker", "z", 10, 0.0)
    s.submit("old", "a", 10, 0.0)
    s.submit("urgent", "b", 10, 9.0, deadline=10.0)
    assert [t.request_id for t in s.release("blocker", 10, 11.0)] == ["old"]


def test_position_and_overdue() -> None:
    s = sched(max_running=1, max_running_per_room=1, stalled_after_s=5.0)
    s.submit("a", "r1", 10, 0.0)
    s.submit("b", "r2", 10, 0.0)
    s.submit("c", "r3", 10, 3.0)
    assert s.position("a", 4.0) == 0
    assert s.position("b", 4.0) == 1
    assert s.position("c", 4.0) == 2
    assert [t.request_id for t in s.overdue(6.0)] == ["b"]
    assert [t.request_id for t in s.overdue(9.0)] == ["b", "c"]


# -- budgets ---------------------------------------------------------------------------


def test_max_tokens_capped() -> None:
    s = sched(max_running=1, max_tokens_cap=100)
    assert s.submit("a", "r", 1000, 0.0).max_tokens == 100


def test_beat_budget_clamps_and_refunds() -> None:
    s = sched(max_running=4, max_running_per_room=4, beat_token_budget=150)
    a = s.submit("a", "r", 120, 0.0, beat="1")
    assert a.max_tokens == 120
    b = s.submit("b", "r", 120, 0.0, beat="1")
    assert b.max_tokens == 30
    with pytest.raises(TokenBudgetExceeded):
        s.submit("c", "r", 10, 0.0, beat="1")
    s.release("a", 40, 1.0)  # used 40 of 120: 80 back
    assert s.submit("d", "r", 100, 1.0, beat="1").max_tokens == 80


def test_new_beat_resets_budget() -> None:
    s = sched(max_running=4, beat_token_budget=100)
    s.submit("a", "r", 100, 0.0, beat="1")
    s.release("a", 100, 1.0)
    assert s.submit("b", "r", 100, 1.0, beat="2").max_tokens == 100


def test_budget_is_per_room() -> None:
    s = sched(max_running=4, beat_token_budget=100)
    s.submit("a", "r1", 100, 0.0, beat="1")
    assert s.submit("b", "r2", 100, 0.0, beat="1").max_tokens == 100


# -- cancellation ----------------------------------------------------------------------


def test_cancel_room_removes_queued_and_reports_running() -> None:
    s = sched(max_running=2, max_running_per_room=1)
    s.submit("a", "r1", 10, 0.0)
    s.submit("b", "r2", 10, 0.0)
    s.submit("a2", "r1", 10, 0.0)
    s.submit("c", "r3", 10, 0.0)
    res = s.cancel_room("r1", 1.0)
    assert res.running == ("a",)
    assert res.queued == ("a2",)
    assert [t.request_id for t in res.admitted] == ["c"]
    assert s.ticket("a") is None and s.ticket("a2") is None


def test_cancel_single_queued() -> None:
    s = sched(max_running=1)
    s.submit("a", "r1", 10, 0.0)
    s.submit("b", "r2", 10, 0.0)
    res = s.cancel("b", 0.5)
    assert res.queued == ("b",) and res.running == ()
    assert s.queued == 0


def test_cancel_unknown_is_noop() -> None:
    s = sched(max_running=1)
    assert s.cancel("nope", 0.0).running == ()


def test_release_unknown_is_noop() -> None:
    s = sched(max_running=1)
    assert s.release("nope", 0, 0.0) == []


def test_forget_room() -> None:
    s = sched(max_running=1)
    s.set_audience("r", 10)
    s.forget_room("r")
    assert s.weight("r") == 1.0
