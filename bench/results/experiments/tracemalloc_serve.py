"""proxy64 serve with tracemalloc: SIGUSR1 writes a snapshot to $P64_SNAPSHOT_DIR/N.snap.

Used by idle_memory.py to see which Python allocations an idle tunnel holds.
"""

import itertools
import os
import signal
import sys
import tracemalloc

from proxy64 import cli

tracemalloc.start(8)
_counter = itertools.count()


def _dump(_signum: int, _frame: object) -> None:
    path = os.path.join(os.environ["P64_SNAPSHOT_DIR"], f"{next(_counter)}.snap")
    tracemalloc.take_snapshot().dump(path)
    open(path + ".done", "w").close()


signal.signal(signal.SIGUSR1, _dump)
sys.exit(cli.main(sys.argv[1:]))
