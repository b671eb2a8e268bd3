"""The timer wheel alone: no epoll, no event loop; ``arm`` records the wake-ups asked for."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tarry.wheel import KEY_MASK, QUANTUM_MAX, QUANTUM_MIN, QUANTUM_PARTS, Wheel, quantum_for


def make(
    rows: int = 8192, quantum: float = 0.5 / QUANTUM_PARTS
) -> tuple[Wheel, list[float | None]]:
    armed: list[float | None] = []
    wheel = Wheel(memoryview(array("I", [0] * rows)), "H", armed.append)
    wheel.set_quantum(quantum, lambda fd: False)
    return wheel, armed


def due_now(wheel: Wheel, now: float) -> list[int]:
    """What the engine's timer does with the wheel, without the bait: the fds due at ``now``."""
    import heapq

    wheel.fired()
    out = []
    limit = wheel.limit(now)
    while wheel.keys and wheel.keys[0] <= limit:
        key = heapq.heappop(wheel.keys)
        out += [fd for fd in wheel.buckets.pop(key) if wheel.due[fd] == key & KEY_MASK]
    wheel.rearm()
    return out


def test_each_wait_is_rounded_up_by_at_most_a_fortieth_of_itself() -> None:
    """A longer wait goes on a coarser grid, never early and at most 1/40
    late, so clients with 10 s waits spread over 10 s share about 50 buckets
    instead of 800."""
    wheel, _ = make()
    q = wheel.quantum
    rand = random.Random(7)
    now = 1000.0
    for fd in range(1, 4001):
        now += 0.0025  # arrivals over 10 s
        wait = rand.choice([0.5, 0.7, 1.3, 2.9, 10.0, rand.uniform(0.5, 30.0)])
        wheel.schedule(fd, now + wait, wait)
        fire = wheel.due[fd] * q
        assert now + wait - 1e-9 <= fire <= now + wait + wait / QUANTUM_PARTS + 1e-9
    wheel.clear()
    now = 2000.0
    for fd in range(1, 4001):
        now += 0.0025
        wheel.schedule(fd, now + 10.0, 10.0)
    assert len(wheel.buckets) <= 10.0 / (16 * q) + 2


def test_the_loop_is_armed_for_the_earliest_bucket_only() -> None:
    wheel, armed = make()
    armed.clear()
    wheel.schedule(1, 10.0)
    wheel.schedule(2, 20.0)  # later: no new wake-up
    wheel.schedule(3, 5.0)  # earlier: the timer moves
    assert armed == [pytest.approx(10.0), pytest.approx(5.0)]
    assert due_now(wheel, 5.0) == [3]
    assert armed[-1] == pytest.approx(10.0)  # re-armed for what is left
    wheel.clear()
    assert armed[-1] is None and wheel.armed == -1


def test_a_rescheduled_client_is_served_once_at_its_new_time() -> None:
    wheel, _ = make()
    wheel.schedule(7, 1.0)
    wheel.schedule(7, 3.0)  # its row now names the later key; the old entry is stale
    assert due_now(wheel, 1.0) == []
    assert due_now(wheel, 3.0) == [7]


def test_a_new_quantum_keeps_every_waiting_client_and_drops_the_departed() -> None:
    wheel, _ = make(quantum=0.25)
    for fd in range(1, 11):
        wheel.schedule(fd, 100.0 + fd)
    gone = {3, 4}
    wheel.set_quantum(0.01, lambda fd: fd not in gone)
    assert wheel.quantum == 0.01
    served = due_now(wheel, 200.0)
    assert sorted(served) == [fd for fd in range(1, 11) if fd not in gone]


@given(st.lists(st.floats(min_value=1e-4, max_value=1e6, allow_nan=False), max_size=8))
def test_quantum_is_a_fortieth_of_the_shortest_wait_within_bounds(waits: list[float]) -> None:
    q = quantum_for(waits)
    assert QUANTUM_MIN <= q <= QUANTUM_MAX
    if waits and QUANTUM_MIN < min(waits) / QUANTUM_PARTS < QUANTUM_MAX:
        assert q == pytest.approx(min(waits) / QUANTUM_PARTS)
