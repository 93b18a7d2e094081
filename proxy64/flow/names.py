"""Which name the app resolved to an address, learned from our own DNS64 answers.

The TUN stack only sees the address a flow goes to; the app got it from proxy64's DNS64
responder moments before. Remembering (address → name) from those answers lets the
readiness report say "v4only.example:443 dns64-synthesized" instead of an anonymous
"[64:ff9b::c000:201]:443 ipv4-literal-mapped". Bounded (oldest forgotten first); a reply
that does not parse teaches nothing. Pure: dnspython's wire parser only.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from ipaddress import IPv4Address, IPv6Address, ip_address

import dns.exception
import dns.message
import dns.rdatatype

IPAddress = IPv4Address | IPv6Address


class NameMemory:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._names: OrderedDict[IPAddress, str] = OrderedDict()
        self.a_lookups: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._names)

    def learn(self, reply: bytes) -> None:
        """Remember the owner name (the question's name) of every AAAA/A in the answer."""
        try:
            message = dns.message.from_wire(reply)
        except (dns.exception.DNSException, ValueError):
            return
        if not message.question:
            return
        name = message.question[0].name.to_text(omit_final_dot=True).lower()
        if message.question[0].rdtype == dns.rdatatype.A and (
            name in self.a_lookups or len(self.a_lookups) < self.limit
        ):
            self.a_lookups[name] += 1
        for rrset in message.answer:
            if rrset.rdtype not in (dns.rdatatype.AAAA, dns.rdatatype.A):
                continue
            for rdata in rrset:
                address = ip_address(rdata.address)
                self._names[address] = name
                self._names.move_to_end(address)
        while len(self._names) > self.limit:
            self._names.popitem(last=False)

    def name_of(self, address: IPAddress) -> str | None:
        return self._names.get(address)
