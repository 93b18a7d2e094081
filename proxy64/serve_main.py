"""The whole `proxy64 serve`: bind, choose the NAT64 prefix once, print one line, then serve
in this process (proxy64/serving.py) or supervise --workers (proxy64/workers.py).
"""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio

from proxy64.app import (
    EXIT_OK,
    SERVE_SIGNALS,
    Load,
    announce,
    bind,
    choose_nat64,
    make_server,
    nat64_watcher,
    startup_line,
)
from proxy64.fd_limit import raise_nofile_limit, serve_need
from proxy64.net.metrics_setup import open_process_metrics
from proxy64.net.nat64_state import Nat64State
from proxy64.net.recorder import Recorder
from proxy64.policy import PolicyInForce
from proxy64.reload import Reloader
from proxy64.serve_config import ServeSettings
from proxy64.serving import late_signals_ignored, serve_until_signal
from proxy64.workers import supervise_workers

logger = logging.getLogger(__name__)


def run_serve(
    settings: ServeSettings,
    *,
    out: Any = None,
    load: Load | None = None,
    config: Path | None = None,
) -> int:
    """The whole `proxy64 serve`: bind, choose, print one line, serve (or supervise workers).

    The NAT64 choice (discovery included) is made once, here, before any fork: every
    worker, restarted ones too, starts from it (and follows changes on its own), and the
    start-up line is printed once. `load` rebuilds the settings from their sources on
    SIGHUP (`config`: the file, named in the error line of a failed reload).
    """
    out = out if out is not None else sys.stderr
    workers = settings.workers
    raise_nofile_limit(serve_need(settings.max_connections))  # workers inherit it
    bound = bind(settings, reuse_port=workers > 1)
    try:
        nat64 = trio.run(choose_nat64, settings)
        state = Nat64State(nat64)
        if workers > 1:
            make_server(settings, bound, state, Recorder())  # fails before "ready"
            signal.pthread_sigmask(signal.SIG_BLOCK, SERVE_SIGNALS)  # until the receiver is up
            return supervise_workers(settings, bound, nat64, out, load=load, config=config)
        credentials = dict(settings.credentials) or None  # shared; a reload updates it
        policy = PolicyInForce(settings.destination_policy())  # and replaces its rules
        reloader = Reloader(load, settings, credentials, config, policy=policy) if load else None
        with open_process_metrics(settings.metrics, credentials) as (metrics, endpoint):
            recorder = Recorder(metrics=metrics)
            server = make_server(
                settings, bound, state, recorder, metrics, credentials=credentials, policy=policy
            )
            signal.pthread_sigmask(signal.SIG_BLOCK, SERVE_SIGNALS)  # until the receiver is up
            announce(startup_line(bound, nat64, metrics=endpoint), settings, out)
            serve = partial(
                serve_until_signal,
                server,
                None,
                None,
                nat64_watcher(settings, state),
                metrics=metrics,
                state=state,
                on_reload=reloader.reload if reloader is not None else None,
            )
            with late_signals_ignored():
                trio.run(serve)
        return EXIT_OK
    finally:
        bound.close()
