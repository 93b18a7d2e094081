from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy64.config import HostPort
from tests.helpers.dnsservers import start_nsd
from tests.helpers.requirements import require_root, require_tool
from tests.tun.harness import ZONE


@pytest.fixture(scope="module")
def nsd() -> Iterator[HostPort]:
    """An authoritative NSD for tun.test. on a unique loopback address (root needed)."""
    require_root()
    require_tool("ip", "nsd")
    with start_nsd({"tun.test.": ZONE}) as server:
        yield server.address
