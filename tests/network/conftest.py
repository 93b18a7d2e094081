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

from tests.helpers.proxy_process import ProxyProcess
from tests.helpers.requirements import require_root, require_tool
from tests.network import topology as T
from tests.network.clients import NSD
from tests.network.netlab import Netlab
from tests.network.netns import remove_stale_labs
from tests.network.proxy import proxy_in

NETWORK_TOOLS = ("ip", "sysctl", "tayga", "nsd", "unbound", "curl", "dig")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what builds namespaces as `network` (pyproject markers), so -m can select it."""
    for item in items:
        if "netlab" in getattr(item, "fixturenames", ()) or item.path.name == "test_netlab.py":
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


@pytest.fixture(scope="module")
def wkp_proxy(netlab: Netlab) -> Iterator[ProxyProcess]:
    """proxy64 doing its own DNS64 against NSD with the well-known prefix (one per module)."""
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)
    args = ("--dns", NSD, "--nat64-prefix", str(T.WELL_KNOWN_PREFIX), "--egress", "nat64")
    with proxy_in(netlab, *args) as proxy:
        yield proxy


@pytest.fixture
def wkp(netlab: Netlab, wkp_proxy: ProxyProcess) -> ProxyProcess:
    netlab.use_prefix(T.WELL_KNOWN_PREFIX)  # another test may have switched tayga
    return wkp_proxy
