"""The HTTP proxy listener for the one executor (net/executor.py): the session machine
(proto/http_session.py) for each accepted client, and the forwarding exchange
(net/http_exchange.py) as the helper of its `Forward` command.

RFC 9110 §9.3.6 (CONNECT), RFC 9112 §3.2 (request targets), §9.3 (persistence), §9.6
(lingering close) live in the machine; the bytes of a forwarded exchange in the helper.
"""

from __future__ import annotations

import logging

from proxy64.defaults import HTTP_BODY_CHUNK
from proxy64.net.auth_gate import auth_hold
from proxy64.net.context import ProxyContext
from proxy64.net.executor import Served
from proxy64.net.http_exchange import forward
from proxy64.proto.http_forward import Forward
from proxy64.proto.http_session import HttpSession

logger = logging.getLogger(__name__)


def _session(ctx: ProxyContext, client: str, have_slot: bool) -> HttpSession:
    refusal = None
    if not have_slot:  # over --max-connections: 503 (RFC 9110 §15.6.4)
        refusal = ctx.connection_slots.refusal(client)
        logger.warning("http %s: refused, %s", client, refusal)
    return HttpSession(
        handshake_timeout=ctx.handshake_timeout,
        idle_timeout=ctx.idle_timeout,
        connect_timeout=ctx.connect_timeout,
        credentials=ctx.credentials,
        auth_answer=auth_hold(ctx, client),
        refusal=refusal,
    )


HTTP = Served(
    name="HTTP",
    sessions=_session,
    logger=logger,
    read_size=HTTP_BODY_CHUNK,
    stepped_helpers={Forward: forward},
    bug_outcome="internal error in the HTTP front end (a bug in proxy64)",
)
