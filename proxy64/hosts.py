"""hosts(5) parsing: the static table the system resolver consults before DNS.

Pure: text in, {name: addresses} out. Each line is an address followed by a canonical
name and aliases; `#` starts a comment. As glibc does, names are matched without case
and without a final dot, an address keeps the order of the file, and a line whose
address does not parse is skipped (one bad line does not hide the others). A scoped
IPv6 address (fe80::1%eth0) is skipped: a proxy has no interface to give it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

IPAddress = IPv4Address | IPv6Address
HostsTable = dict[str, tuple[IPAddress, ...]]


def parse_hosts(text: str) -> HostsTable:
    """The names of a hosts(5) file and their addresses, in file order."""
    table: dict[str, list[IPAddress]] = {}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2 or "%" in fields[0]:
            continue
        try:
            address = ip_address(fields[0])
        except ValueError:
            continue
        for name in fields[1:]:
            key = host_key(name)
            if not key:
                continue
            known = table.setdefault(key, [])
            if address not in known:
                known.append(address)
    return {name: tuple(addresses) for name, addresses in table.items()}


def host_key(name: str) -> str:
    """How a name is looked up in the table: lower case, no final dot."""
    return name.rstrip(".").lower()
