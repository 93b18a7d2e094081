"""The SOCKS listener: SOCKS4/4a/5 connections served by the one executor (executor.py)
with the pure session machine of proto/socks_session.py.

Here is only what joins the two: the machine for each accepted client (the context's
credentials, handshake timeout and authentication hold; whether it got a
--max-connections slot, and the sentence its refusal carries) and the helper that carries
out UDP ASSOCIATE (net/socks_udp.py). Every decision is the machine's.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from proxy64.defaults import SOCKS_HANDSHAKE_READ
from proxy64.net.auth_gate import auth_hold
from proxy64.net.context import ConnectionRecord, ProxyContext
from proxy64.net.executor import Served
from proxy64.net.socks_udp import serve_udp_association
from proxy64.proto.session import Event
from proxy64.proto.socks_session import Associate, SocksSession

logger = logging.getLogger(__name__)


def new_session(ctx: ProxyContext, client: str, have_slot: bool) -> SocksSession:
    """The session machine for one accepted client ("host:port")."""
    refusal = None
    if not have_slot:  # the handshake runs, then the request is refused (0x01 / 0x5B)
        refusal = ctx.connection_slots.refusal(client)
        logger.warning("refusing %s: %s", client, refusal)
    return SocksSession(
        handshake_timeout=ctx.handshake_timeout,
        credentials=ctx.credentials,
        hold=auth_hold(ctx, client),
        refusal=refusal,
    )


async def associate(
    command: Any,
    client: trio.SocketStream,
    record: ConnectionRecord | None,
    ctx: ProxyContext,
) -> Event | None:
    """RFC 1928 §7: the UDP association, until its control connection closes."""
    assert isinstance(command, Associate) and record is not None
    await serve_udp_association(client, command.machine, command.requested, ctx, record)
    return None


SOCKS = Served(
    name="SOCKS",
    sessions=new_session,
    logger=logger,
    read_size=SOCKS_HANDSHAKE_READ,
    helpers={Associate: associate},
)
