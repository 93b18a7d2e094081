"""What the network tests use to talk through proxy64: curl arguments per front end, a raw
HTTP proxy request (curl hides a failed CONNECT's body), a SOCKS5 socket opened inside the
client namespace, and the origin's "origin=L peer=A" report.
"""

from __future__ import annotations

import socket
from ipaddress import ip_address

from tests.helpers import socks5_client
from tests.helpers.proxy_process import ProxyProcess
from tests.network import topology as T
from tests.network.netlab import Netlab
from tests.network.netns import socket_in

NSD = f"[{T.NSD6}]:53"
UNBOUND = f"[{T.UNBOUND6}]:53"
FRONT_ENDS = ("socks5h", "http-connect", "http-forward")


def hostport(address: tuple[str, int] | None) -> str:
    assert address is not None, "listener is off"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fetch(lab: Netlab, proxy: ProxyProcess, front_end: str, url: str) -> str:
    """curl URL through proxy64's front end; returns the body, fails the test on error."""
    result = lab.curl("--fail-with-body", *proxy_args(proxy, front_end), url)
    assert result.returncode == 0, (
        f"curl {front_end} {url}: exit {result.returncode} {result.stderr}{result.stdout}\n"
        f"proxy64 log:\n{proxy.output()[-2000:]}"
    )
    return result.stdout


def origin_report(body: str) -> tuple[str, str]:
    """("v4"|"v6", peer address) from the origin's "origin=L peer=A path=P" line."""
    fields = dict(part.split("=", 1) for part in body.split())
    return fields["origin"], fields["peer"]


def assert_through_tayga(body: str) -> None:
    label, peer = origin_report(body)
    assert label == "v4"
    assert ip_address(peer) in T.DYNAMIC_POOL, f"origin saw {peer}, not tayga's pool"


def proxy_args(proxy: ProxyProcess, front_end: str) -> list[str]:
    """curl's options for one front end: SOCKS5 with remote names, CONNECT, forwarding."""
    if front_end == "socks5h":
        return ["--socks5-hostname", hostport(proxy.socks)]
    if front_end == "http-connect":
        return ["-p", "-x", f"http://{hostport(proxy.http)}"]
    return ["-x", f"http://{hostport(proxy.http)}"]


def proxy_answer(lab: Netlab, proxy: ProxyProcess, front_end: str, target: str) -> str:
    """The proxy's whole answer to one request, read raw: curl hides a failed CONNECT's body."""
    if front_end == "http-connect":
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    else:
        request = f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    assert proxy.http is not None
    with socket_in(lab.client, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(proxy.http)
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if length and len(body) >= length[0]:
                break
    return answer.decode(errors="replace")


def socks_socket(lab: Netlab, proxy: ProxyProcess) -> socket.socket:
    sock = socket_in(lab.client, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(socks5_client.TIMEOUT)
    assert proxy.socks is not None
    sock.connect(proxy.socks)
    return sock
