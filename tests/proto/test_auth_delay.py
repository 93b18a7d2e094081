"""The failed-authentication delay (proxy64/proto/auth_delay.py) with time as values:
growth, cap, spacing of parallel attempts, successes held during a burst, forgetting,
other addresses untouched, bounded memory; hypothesis invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.proto.auth_delay import AuthDelay


def policy(**kw: float) -> AuthDelay:
    values = {"base": 0.25, "cap": 4.0, "forget_after": 60.0, **kw}
    return AuthDelay(
        base=values["base"], cap=values["cap"], forget_after=values["forget_after"], max_tracked=3
    )


def test_first_failure_is_answered_at_once_and_starts_a_burst() -> None:
    p = policy()
    held = p.answer("a", False, 0.0)
    assert held.seconds == 0 and held.burst_started and held.failures == 1
    assert p.holding("a", 0.0) and not p.holding("b", 0.0)


def test_sequential_failures_double_up_to_the_cap() -> None:
    p = policy()
    now, holds = 0.0, []
    for _ in range(9):
        hold = p.answer("a", False, now).seconds
        holds.append(hold)
        now += hold  # the client waits for each answer before the next guess
    assert holds == [0, 0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_parallel_attempts_are_spaced_not_answered_together() -> None:
    p = policy()
    p.answer("a", False, 0.0)
    holds = [p.answer("a", False, 0.0).seconds for _ in range(4)]
    assert holds == [0.25, 0.75, 1.75, 3.75]  # each release waits for the one before


def test_success_during_a_burst_is_held_too_and_other_addresses_are_not() -> None:
    p = policy()
    p.answer("a", False, 0.0)
    p.answer("a", False, 0.0)
    assert p.answer("a", True, 0.0).seconds == pytest.approx(0.75)
    assert p.answer("b", True, 0.0).seconds == 0
    assert p.answer("b", False, 0.0).seconds == 0  # b's own first failure


def test_a_burst_is_forgotten_after_quiet() -> None:
    p = policy(forget_after=60.0)
    p.answer("a", False, 0.0)
    p.answer("a", False, 1.0)
    assert p.holding("a", 61.0)
    assert not p.holding("a", 61.5)
    assert p.answer("a", True, 62.0).seconds == 0


def test_memory_is_bounded_oldest_burst_dropped() -> None:
    p = policy()  # max_tracked=3
    for client in ("a", "b", "c", "d"):
        p.answer(client, False, 0.0)
    assert not p.holding("a", 0.0)
    assert all(p.holding(c, 0.0) for c in ("b", "c", "d"))


def test_base_above_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        AuthDelay(base=2.0, cap=1.0, forget_after=1.0)


ATTEMPTS = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.booleans(), st.floats(0, 5)), max_size=40
)


@given(ATTEMPTS)
def test_hypothesis_holds_are_bounded_spaced_and_per_address(
    attempts: list[tuple[str, bool, float]],
) -> None:
    """Invariants: a hold is never negative; a client that never failed is never held;
    while a burst lives, answers to one address are released in order, each at least
    one step after the one before; a hold is at most the queue ahead plus the cap."""
    p = policy()
    now = 0.0
    released: dict[str, float] = {}
    for client, ok, gap in attempts:
        now += gap
        live = p.holding(client, now)
        failures_before = p._bursts[client].failures if live else 0
        held = p.answer(client, ok, now)
        assert held.seconds >= 0
        if not live:
            assert held.seconds == 0
            released[client] = now
            continue
        release = now + held.seconds
        assert release >= released.get(client, 0.0) + p.step(failures_before) - 1e-9
        assert held.seconds <= max(0.0, released.get(client, 0.0) - now) + p.cap + 1e-9
        released[client] = release
