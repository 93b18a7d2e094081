"""Config files of the NAT64 test network, rendered from the templates in docker/ (shared
with the compose demo) or written here (Unbound exists only in the tests).
"""

from __future__ import annotations

import string
from ipaddress import IPv6Network
from pathlib import Path

from tests.network import topology as T

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
TAYGA_TEMPLATE = DOCKER_DIR / "nat64" / "tayga.conf.template"
NSD_TEMPLATE = DOCKER_DIR / "dns" / "nsd.conf.template"
ZONE_FILES = (DOCKER_DIR / "dns" / "nat64.test.zone", DOCKER_DIR / "dns" / "ipv4only.arpa.zone")
ORIGIN_SERVER = DOCKER_DIR / "origin" / "origin_server.py"
ORIGIN_ENTRYPOINT = DOCKER_DIR / "origin" / "entrypoint.sh"
NAT64_ENTRYPOINT = DOCKER_DIR / "nat64" / "entrypoint.sh"
DNS_ENTRYPOINT = DOCKER_DIR / "dns" / "entrypoint.sh"


def fill_template(path: Path, **values: str) -> str:
    """${NAME} placeholders, the same syntax docker/*/entrypoint.sh fill with sed."""
    return string.Template(path.read_text()).substitute(values)


def tayga_config(prefix: IPv6Network, data_dir: str) -> str:
    return fill_template(
        TAYGA_TEMPLATE,
        TUN_DEVICE=T.TUN_DEVICE,
        IPV4_ADDR=str(T.TAYGA_IPV4),
        PREFIX=str(prefix),
        DYNAMIC_POOL=str(T.DYNAMIC_POOL),
        DATA_DIR=data_dir,
    )


def unbound_config(prefix: IPv6Network, run_dir: str) -> str:
    """Unbound as the network's DNS64 (RFC 6147), asking only our NSD, never the root."""
    return f"""\
server:
    interface: {T.UNBOUND6}
    port: 53
    do-ip4: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{run_dir}"
    pidfile: "{run_dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    access-control: ::/0 allow
    module-config: "dns64 iterator"
    dns64-prefix: {prefix}
    local-zone: "test." nodefault
    do-not-query-localhost: no
    qname-minimisation: no
stub-zone:
    name: "{T.ZONE}"
    stub-addr: {T.NSD6}
stub-zone:
    name: "ipv4only.arpa."
    stub-addr: {T.NSD6}
forward-zone:
    name: "."
    forward-addr: {T.NSD6}
remote-control:
    control-enable: no
"""
