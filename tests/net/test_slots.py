"""Connection slots (proxy64/net/slots.py): --max-connections in all and a budget per
client address, so one address cannot take every slot."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from proxy64.net.slots import ConnectionSlots, client_host


def test_client_host_of_v4_v6_and_unknown() -> None:
    assert client_host("127.0.0.1:5000") == "127.0.0.1"
    assert client_host("[::1]:5000") == "::1"
    assert client_host("unknown") == "unknown"


def test_one_address_is_held_to_its_budget_others_are_not() -> None:
    slots = ConnectionSlots(10, per_client=2)
    a1, a2, a3, b1 = object(), object(), object(), object()
    assert slots.borrow(a1, "127.0.0.1:1") and slots.borrow(a2, "127.0.0.1:2")
    assert not slots.borrow(a3, "127.0.0.1:3")
    assert slots.refusal("127.0.0.1:3") == (
        "too many connections from 127.0.0.1 (--max-client-connections 2)"
    )
    assert slots.borrow(b1, "[::1]:4")  # another address is served
    slots.release_on_behalf_of(a1)
    assert slots.borrow(a3, "127.0.0.1:3")  # a slot given back is lendable again
    assert slots.borrowed_tokens == 3


def test_the_total_is_named_when_all_slots_are_taken() -> None:
    slots = ConnectionSlots(2, per_client=2)
    assert slots.borrow(object(), "10.0.0.1:1") and slots.borrow(object(), "10.0.0.2:1")
    assert not slots.borrow(object(), "10.0.0.3:1")
    assert slots.refusal("10.0.0.3:1") == "too many connections (--max-connections 2)"


def test_capacity_limiter_spelling_and_double_borrow() -> None:
    slots = ConnectionSlots(1)
    token = object()
    slots.acquire_on_behalf_of_nowait(token)
    with pytest.raises(trio.WouldBlock):
        slots.acquire_on_behalf_of_nowait(object())
    with pytest.raises(RuntimeError):
        slots.borrow(token, "x:1")


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["10.0.0.1:1", "10.0.0.2:1", "[::1]:1"])),
        max_size=60,
    )
)
def test_hypothesis_counts_never_exceed_the_limits(steps: list[tuple[bool, str]]) -> None:
    """Invariant: after any borrow/release sequence no address holds more than its
    budget, the total is never exceeded, and every slot released is counted back."""
    slots = ConnectionSlots(5, per_client=2)
    held: list[tuple[object, str]] = []
    for borrow, client in steps:
        if borrow:
            token = object()
            if slots.borrow(token, client):
                held.append((token, client))
        elif held:
            token, _ = held.pop(0)
            slots.release_on_behalf_of(token)
        assert slots.borrowed_tokens == len(held) <= 5
        for name in ("10.0.0.1:1", "10.0.0.2:1", "[::1]:1"):
            assert slots.held_by(name) == sum(1 for _, c in held if c == name) <= 2
