"""fd_limit.choose_nofile: the soft open-files limit `serve` and the TUN modes set."""

from __future__ import annotations

import resource

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.defaults import FDS_PER_CONNECTION, FDS_RESERVED, MAX_CONNECTIONS, TUN_MAX_FLOWS
from proxy64.fd_limit import FdNeed, choose_nofile, serve_need, tun_need

INFINITY = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "need", "expected", "warns"),
    [
        (
            1024,
            524288,
            serve_need(MAX_CONNECTIONS),
            MAX_CONNECTIONS * FDS_PER_CONNECTION + 256,
            False,
        ),
        (1024, INFINITY, serve_need(1000), 1000 * FDS_PER_CONNECTION + FDS_RESERVED, False),
        (1024, INFINITY, serve_need(100), 1024, False),  # 856 wanted: the soft limit holds them
        (1024, 8448, serve_need(MAX_CONNECTIONS), 8448, False),  # sockets fit; splices copy
        (1024, 4096, serve_need(MAX_CONNECTIONS), 4096, True),
        (1024, 1024, serve_need(MAX_CONNECTIONS), 1024, True),
        (100_000, 1_000_000, serve_need(10), 100_000, False),  # never lowered
        (1024, 524288, tun_need(), TUN_MAX_FLOWS + FDS_RESERVED, False),
        (1024, 2048, tun_need(), 2048, True),
    ],
)
def test_stock_limits(soft: int, hard: int, need: FdNeed, expected: int, warns: bool) -> None:
    choice = choose_nofile(soft, hard, need)
    assert choice.soft == expected
    assert (choice.warning is not None) == warns


def test_the_warning_says_how_many_fit_and_what_to_do() -> None:
    assert choose_nofile(1024, 1024, serve_need(4096)).warning == (
        "open files limit 1024 is below the 8448 that --max-connections 4096 needs: past "
        "about 384 connections new ones wait for a free fd; raise the hard limit (ulimit "
        "-Hn, LimitNOFILE= in a systemd unit) or lower --max-connections"
    )
    assert choose_nofile(1024, 1024, tun_need()).warning == (
        f"open files limit 1024 is below the {TUN_MAX_FLOWS + FDS_RESERVED} that "
        f"{TUN_MAX_FLOWS} TUN flows (TUN_MAX_FLOWS) needs: past about 768 flows new ones "
        "wait for a free fd; raise the hard limit (ulimit -Hn, LimitNOFILE= in a systemd unit)"
    )


@given(
    soft=st.integers(0, 2**20),
    hard=st.integers(0, 2**21) | st.just(INFINITY),
    count=st.integers(1, 1_000_000),
    least=st.integers(1, 3),
    extra=st.integers(0, 5),
)
def test_never_lowered_never_past_hard_and_warns_exactly_when_the_least_does_not_fit(
    soft: int, hard: int, count: int, least: int, extra: int
) -> None:
    if hard != INFINITY and soft > hard:
        soft = hard  # the kernel keeps soft <= hard
    need = FdNeed(count, least + extra, least, "N things")
    choice = choose_nofile(soft, hard, need)
    assert choice.soft >= soft
    if hard != INFINITY:
        assert choice.soft <= hard
    if soft <= need.wanted and (hard == INFINITY or hard >= need.wanted):
        assert choice.soft == need.wanted
    assert (choice.warning is None) == (choice.soft >= need.needed)
