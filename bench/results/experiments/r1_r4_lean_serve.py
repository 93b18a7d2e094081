"""proxy64 serve with the PROFILE.md proposals R1-R4 applied by monkeypatching (experiment).

Written against proxy64 at commit 6ebd74f; later commits rewrote relay.py and listeners.py
(R3 and much of R1/R4 landed there), so this patch only applies to that checkout.

R1 close a SocketStream once, synchronously (no cancel scope, no checkpoint)
R2 skip the second half-close: when the other direction already ended, close() sends FIN
R3 own accept loop: accept until EAGAIN, no serve_listeners wrapper
R4 relay: run one direction in the handler's task, spawn only the other
"""

import sys

import trio

import proxy64.net.listeners as listeners
import proxy64.net.relay as relay_mod
from proxy64 import cli

_orig_aclose = trio.aclose_forcefully


async def fast_aclose(resource):
    if isinstance(resource, trio.SocketStream):
        resource.socket.close()
        return
    await _orig_aclose(resource)


trio.aclose_forcefully = fast_aclose


class LeanTunnel(relay_mod._Tunnel):
    __slots__ = ("ended",)

    async def direction(self, src, dst, up):
        try:
            await self._forward(src, dst, up)
            if getattr(self, "ended", False):
                return  # R2: the other side already ended; relay's close sends the FIN
            self.ended = True
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            where = "client → remote" if up else "remote → client"
            self.broken = f"{where} broke: {exc or 'connection reset'}"
            self.outcome = self.broken
            self.scope.cancel()


async def lean_relay(
    client,
    remote,
    record,
    *,
    idle_timeout=relay_mod.IDLE_TIMEOUT,
    splice_threshold=relay_mod.SPLICE_THRESHOLD,
    splice_release_after=relay_mod.SPLICE_RELEASE_AFTER,
):
    if not (
        relay_mod.HAVE_SPLICE
        and splice_threshold is not None
        and isinstance(client, trio.SocketStream)
        and isinstance(remote, trio.SocketStream)
    ):
        splice_threshold = None
    tunnel = LeanTunnel(record, idle_timeout, splice_threshold, splice_release_after)
    tunnel.ended = False
    try:
        async with trio.open_nursery() as nursery:
            tunnel.scope = nursery.cancel_scope
            nursery.cancel_scope.deadline = trio.current_time() + idle_timeout
            nursery.start_soon(tunnel.direction, remote, client, False)
            await tunnel.direction(client, remote, True)  # R4: this task carries one side
        if tunnel.scope.cancelled_caught and tunnel.broken is None:
            tunnel.outcome = f"idle for {idle_timeout:g} s, closed"
    finally:
        remote.socket.close() if isinstance(remote, trio.SocketStream) else None
        client.socket.close() if isinstance(client, trio.SocketStream) else None
    if record.outcome == "open":
        record.outcome = tunnel.outcome


relay_mod.relay = lean_relay


async def lean_accept_loop(self, listener, handler, connections):
    sock = listener.socket
    while True:
        try:
            conn, _ = await sock.accept()
        except OSError:
            await trio.sleep(0.1)  # EMFILE etc.: the real change keeps serve_listeners' handling
            continue
        connections.start_soon(self._handle, trio.SocketStream(conn), handler)


listeners.ProxyServer._accept_loop = lean_accept_loop
sys.exit(cli.main(sys.argv[1:]))
