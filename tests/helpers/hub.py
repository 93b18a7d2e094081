"""A running relay hub for tests that relay between sockets (the server runs it in serve)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from proxy64.net.relay_hub import RelayHub


@asynccontextmanager
async def running_hub() -> AsyncIterator[RelayHub]:
    """A hub running in a nursery of its own until the block ends."""
    hub = RelayHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        yield hub
        nursery.cancel_scope.cancel()


async def start_hub(nursery: trio.Nursery) -> RelayHub:
    """A hub running in `nursery` (e.g. pytest-trio's, cancelled when the test ends)."""
    hub = RelayHub()
    await nursery.start(hub.run)
    return hub
