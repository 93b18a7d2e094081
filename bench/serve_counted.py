#!/usr/bin/env python3
"""`python -m proxy64 ARGS` with a per-process count of finished connections (workers phase).

The workers phase of bench/run.py starts serve through this file to see how SO_REUSEPORT
spread the connections over the workers. Every process that serves writes
`$P64_BENCH_COUNTS/accepts-PID` (the count) when its ProxyServer.run returns, i.e. on
a clean stop. The count is taken in socket.socket._accept, the accept4(2) under
socket.accept() (every accept path ends there, whatever front end takes the connection,
and the hub's acceptor calls it directly): one extra Python call per connection, the same
for 1 and N workers.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent))  # PYTHONPATH (A/B trees) first

from proxy64.net import listeners

COUNTS = Path(os.environ.get("P64_BENCH_COUNTS", "."))
_count = [0]
_accept = socket.socket._accept  # type: ignore[attr-defined]
_run = listeners.ProxyServer.run


def _counting_accept(self: socket.socket) -> Any:
    accepted = _accept(self)  # raises BlockingIOError when none is waiting: not counted
    _count[0] += 1
    return accepted


async def _counting_run(self: listeners.ProxyServer, **kwargs: Any) -> None:
    try:
        await _run(self, **kwargs)
    finally:
        (COUNTS / f"accepts-{os.getpid()}").write_text(str(_count[0]))


socket.socket._accept = _counting_accept  # type: ignore[attr-defined]
listeners.ProxyServer.run = _counting_run  # type: ignore[method-assign]

if __name__ == "__main__":
    from proxy64.cli import main

    sys.argv[0] = "proxy64"
    raise SystemExit(main())
