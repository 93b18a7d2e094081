"""RFC 8305 attempt plan: §4 ordering (family interleaving, duplicates) and §5 timing."""

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.destination import Egress, Reached
from proxy64.errors import LocalProtocolError
from proxy64.proto.attempts import AttemptPlan, Target, interleave


def v6(n: int, port: int = 443) -> Target:
    return Target(IPv6Address(f"2001:db8::{n:x}"), port, Reached.NATIVE_IPV6, None)


def v4(n: int, port: int = 443) -> Target:
    return Target(IPv4Address(f"192.0.2.{n}"), port, Reached.DNS64, Egress.EMBEDDED)


def test_rfc8305_4_interleaves_families_first_family_first() -> None:
    order = interleave([v6(1), v6(2), v6(3), v4(1), v4(2)])
    assert order == [v6(1), v4(1), v6(2), v4(2), v6(3)]
    order = interleave([v4(1), v6(1), v6(2)])
    assert order == [v4(1), v6(1), v6(2)]


def test_rfc8305_4_keeps_resolver_order_within_a_family_and_drops_duplicates() -> None:
    assert interleave([v6(3), v6(1), v6(3), v6(2)]) == [v6(3), v6(1), v6(2)]
    assert interleave([]) == []


def test_rfc8305_5_stagger_and_failure_starts_next_at_once() -> None:
    plan = AttemptPlan([v6(1), v6(2), v6(3)], 0.25)
    assert plan.next_start() is None  # the first attempt is due now
    assert plan.start(0.0) == v6(1)
    assert plan.next_start() == 0.25  # Connection Attempt Delay
    with pytest.raises(LocalProtocolError):
        plan.start(0.1)  # too early
    assert plan.start(0.25) == v6(2)
    assert plan.next_start() == 0.5
    plan.failed(0.3)  # an attempt failed: do not wait for 0.5
    assert plan.next_start() == 0.3
    assert plan.start(0.3) == v6(3)
    assert plan.next_start() is None and plan.remaining == 0
    assert not plan.exhausted()  # two still in flight
    plan.failed(0.4)
    plan.failed(0.5)
    assert plan.exhausted()
    with pytest.raises(LocalProtocolError):
        plan.failed(0.6)
    with pytest.raises(LocalProtocolError):
        plan.start(0.7)


def test_negative_delay_is_a_bug() -> None:
    with pytest.raises(LocalProtocolError):
        AttemptPlan([v6(1)], -1.0)


targets = st.lists(
    st.builds(
        Target,
        st.one_of(
            st.integers(0, 2**32 - 1).map(IPv4Address),
            st.integers(0, 2**128 - 1).map(IPv6Address),
        ),
        st.integers(1, 65535),
        st.sampled_from(list(Reached)),
        st.sampled_from([None, *Egress]),
    ),
    max_size=12,
)


@given(targets)
def test_interleave_is_a_permutation_of_the_unique_targets(items: list[Target]) -> None:
    out = interleave(items)
    keys = [(t.address, t.port) for t in out]
    assert len(keys) == len(set(keys))
    assert {(t.address, t.port) for t in items} == set(keys)
    if out:
        assert out[0] == items[0]
    for index in range(1, len(out)):
        # families alternate until one runs out, then the rest keep their order
        if out[index - 1].address.version == out[index].address.version:
            assert len({t.address.version for t in out[index:]}) == 1


@given(targets, st.lists(st.sampled_from(["start", "fail", "wait"]), max_size=40))
def test_plan_only_raises_local_protocol_error(items: list[Target], steps: list[str]) -> None:
    plan = AttemptPlan(items, 0.25)
    now = 0.0
    started = 0
    for step in steps:
        try:
            if step == "start":
                plan.start(now)
                started += 1
            elif step == "fail":
                plan.failed(now)
            else:
                now += 0.1
        except LocalProtocolError:
            pass
        assert plan.in_flight <= started
        assert plan.remaining >= 0
