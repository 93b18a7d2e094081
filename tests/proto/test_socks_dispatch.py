"""The first byte picks the SOCKS machine; anything else is named for what it is."""

from __future__ import annotations

import pytest

from proxy64.errors import RemoteProtocolError
from proxy64.proto.socks4 import Socks4Server
from proxy64.proto.socks5 import Socks5Server
from proxy64.proto.socks_dispatch import machine_for


def test_first_byte_picks_the_machine() -> None:
    five = machine_for(0x05, require_auth=True)
    assert isinstance(five, Socks5Server) and five.require_auth
    assert isinstance(machine_for(0x04, require_auth=False), Socks4Server)


@pytest.mark.parametrize(
    ("first", "words"),
    [(ord("G"), "HTTP client"), (ord("C"), "HTTP proxy port"), (0x16, "TLS"), (0x00, "0x00")],
)
def test_not_socks(first: int, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        machine_for(first, require_auth=False)
