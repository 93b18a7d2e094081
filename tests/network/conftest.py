"""Fixtures for the NAT64 network tests: one network per test session, tayga and Unbound
restarted only when a test asks for another prefix.

Not root, or a tool missing: skipped with the reason; under CI=true that is a failure
(tests/helpers/requirements.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.requirements import require_root, require_tool
from tests.network.netlab import Netlab

NETWORK_TOOLS = ("ip", "sysctl", "tayga", "nsd", "unbound", "curl", "dig")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/network/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.network)


@pytest.fixture(scope="session")
def netlab() -> Iterator[Netlab]:
    require_root()
    require_tool(*NETWORK_TOOLS)
    lab = Netlab.new()
    try:
        lab.create()
        yield lab
    finally:
        lab.destroy()
