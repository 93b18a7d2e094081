"""Fixtures the command tests share: one real HTTP origin and one authoritative DNS
server (NSD, CORE_ZONE) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.aiohttp_origin import Origin, running_origin
from tests.helpers.dnsservers import CORE_ZONE, CORE_ZONE_NAME, DnsProcess, start_nsd


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with running_origin() as server:
        yield server


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsProcess]:
    with start_nsd({CORE_ZONE_NAME: CORE_ZONE}) as server:
        yield server
