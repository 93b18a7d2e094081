"""fd_limit.choose_nofile: the soft open-files limit `serve` sets for --max-connections."""

from __future__ import annotations

import resource

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy64.defaults import FDS_PER_CONNECTION, FDS_RESERVED, MAX_CONNECTIONS
from proxy64.fd_limit import MIN_FDS_PER_CONNECTION, choose_nofile, wanted_fds

INFINITY = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "connections", "expected", "warns"),
    [
        (1024, 524288, MAX_CONNECTIONS, MAX_CONNECTIONS * FDS_PER_CONNECTION + FDS_RESERVED, False),
        (1024, INFINITY, 1000, 1000 * FDS_PER_CONNECTION + FDS_RESERVED, False),
        (1024, INFINITY, 100, 1024, False),  # 856 wanted: the soft limit already holds them
        (1024, 8448, MAX_CONNECTIONS, 8448, False),  # sockets fit; splices may copy instead
        (1024, 4096, MAX_CONNECTIONS, 4096, True),
        (1024, 1024, MAX_CONNECTIONS, 1024, True),
        (100_000, 1_000_000, 10, 100_000, False),  # never lowered
    ],
)
def test_stock_limits(soft: int, hard: int, connections: int, expected: int, warns: bool) -> None:
    choice = choose_nofile(soft, hard, connections)
    assert choice.soft == expected
    assert (choice.warning is not None) == warns


def test_the_warning_says_how_many_connections_fit_and_what_to_do() -> None:
    warning = choose_nofile(1024, 1024, 4096).warning
    assert warning == (
        "open files limit 1024 is below the 8448 that --max-connections 4096 needs: past "
        "about 384 connections new ones wait for a free fd; raise the hard limit (ulimit "
        "-Hn, LimitNOFILE= in a systemd unit) or lower --max-connections"
    )


@given(
    soft=st.integers(0, 2**20),
    hard=st.integers(0, 2**21) | st.just(INFINITY),
    connections=st.integers(1, 1_000_000),
)
def test_never_lowered_never_past_hard_and_warns_exactly_when_sockets_do_not_fit(
    soft: int, hard: int, connections: int
) -> None:
    if hard != INFINITY and soft > hard:
        soft = hard  # the kernel keeps soft <= hard
    choice = choose_nofile(soft, hard, connections)
    assert choice.soft >= soft
    if hard != INFINITY:
        assert choice.soft <= hard
    if soft <= wanted_fds(connections) and (hard == INFINITY or hard >= wanted_fds(connections)):
        assert choice.soft == wanted_fds(connections)
    needed = connections * MIN_FDS_PER_CONNECTION + FDS_RESERVED
    assert (choice.warning is None) == (choice.soft >= needed)
