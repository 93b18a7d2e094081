"""proxy64 serve with one change: closing a trio.SocketStream is a plain sync close."""

import sys

import trio

from proxy64 import cli

_orig = trio.aclose_forcefully


async def fast_aclose(resource):
    if isinstance(resource, trio.SocketStream):
        resource.socket.close()  # idempotent; no cancel scope, no checkpoint
        return
    await _orig(resource)


trio.aclose_forcefully = fast_aclose
sys.exit(cli.main(sys.argv[1:]))
