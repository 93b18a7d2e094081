"""Access rules in TUN mode: an app in the sandbox connects to addresses (its names were
answered by our DNS64), so address, port and client rules decide there; a denied flow
is reset (curl: could not connect) and the log line names the rule."""

from __future__ import annotations

import logging

import pytest
import trio

from proxy64.config import HostPort
from proxy64.policy import DestinationPolicy
from proxy64.rules import Action, parse_rule_line
from tests.helpers.origins import serve_http_hello
from tests.helpers.requirements import require_tool
from tests.tun.harness import LOOPBACK_SYNTH, run_sandboxed

pytestmark = pytest.mark.network


async def test_a_deny_rule_refuses_a_flow_by_the_ipv4_behind_the_prefix(
    nsd: HostPort, caplog: pytest.LogCaptureFixture
) -> None:
    require_tool("curl")
    async with trio.open_nursery() as nursery:
        denied = await nursery.start(serve_http_hello)
        allowed = await nursery.start(serve_http_hello)
        rule = parse_rule_line(f"127.0.0.0/8 ports={denied}", "--deny", Action.DENY)
        script = (
            f"curl -sS -m 10 http://[{LOOPBACK_SYNTH}]:{denied}/no; echo denied=$?; "
            f"curl -sS -m 10 http://v4only.tun.test:{allowed}/yes; echo allowed=$?"
        )
        with caplog.at_level(logging.INFO):
            run = await run_sandboxed(
                ["sh", "-c", script], nsd, policy=DestinationPolicy(rules=(rule,))
            )
        nursery.cancel_scope.cancel()
    assert "denied=7" in run.output, run.output  # reset: curl could not connect
    assert "hello /yes\nallowed=0" in run.output
    logged = [r.getMessage() for r in caplog.records if "denied by rule" in r.getMessage()]
    assert logged and f"rule 1 (deny dest 127.0.0.0/8 ports {denied}, --deny)" in logged[0]
