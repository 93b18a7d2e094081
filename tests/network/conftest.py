"""Fixtures for the NAT64 network tests: one network per test session, tayga and Unbound
restarted only when a test asks for another prefix.

Not root, or a tool missing: skipped with the reason; under CI=true that is a failure
(tests/helpers/requirements.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from tests.helpers.requirements import require_root, require_tool
from tests.network.netlab import Netlab, remove_stale_labs

NETWORK_TOOLS = ("ip", "sysctl", "tayga", "nsd", "unbound", "curl", "dig")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "network" in item.path.parts and "tests" in item.path.parts:
            item.add_marker(pytest.mark.network)


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so finalizers and atexit still run


@pytest.fixture(scope="session")
def netlab() -> Iterator[Netlab]:
    require_root()
    require_tool(*NETWORK_TOOLS)
    remove_stale_labs()
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:  # a SIGTERM to pytest would skip every teardown
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    lab = Netlab.new()
    try:
        lab.create()
        yield lab
    finally:
        lab.destroy()
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
