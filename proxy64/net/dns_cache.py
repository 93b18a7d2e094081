"""A bounded cache of DNS64 answers that honours their TTLs, positive and negative.

Time is passed in (`now`), so the cache is deterministic under trio's MockClock and in
unit tests. Positive answers live their TTL (capped at DNS_POSITIVE_TTL_MAX); NXDOMAIN
and NODATA live their RFC 2308 §5 negative TTL capped at DNS_NEGATIVE_TTL_MAX; SERVFAIL
and timeouts are not cached. A hit returns the answer with the TTL it has left. When full,
the least recently used entry goes first.

Entries are keyed by the lower-case presentation form of the name (cache_key), because
hashing a dns.name.Name runs a Python loop per character: a text key keeps a hit cheap
and lets resolve() look a name up before parsing it.
"""

from __future__ import annotations

from collections import OrderedDict

import dns.name

from proxy64.defaults import DNS_CACHE_ENTRIES, DNS_NEGATIVE_TTL_MAX, DNS_POSITIVE_TTL_MAX
from proxy64.proto.dns64 import Dns64Answer, Outcome

_NEGATIVE = (Outcome.NXDOMAIN, Outcome.NODATA)


def cache_key(qname: dns.name.Name) -> str:
    """The cache key of a name: presentation form, lower case, no final dot."""
    return qname.to_text(omit_final_dot=True).lower()


class Dns64Cache:
    def __init__(self, max_entries: int = DNS_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a DNS cache needs room for at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Dns64Answer, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> Dns64Answer | None:
        """The cached answer for cache_key(name), with its remaining TTL; None when absent
        or expired."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        answer, expires = entry
        left = int(expires - now)
        if left <= 0:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        # Built directly: dataclasses.replace() costs several times more on this hot path.
        return Dns64Answer(
            answer.qname,
            answer.outcome,
            answer.chain,
            answer.owner,
            answer.addresses,
            answer.synthesized,
            left,
            answer.soa,
            answer.note,
        )

    def put(self, answer: Dns64Answer, now: float) -> None:
        if answer.outcome is Outcome.ANSWER:
            ttl = min(answer.ttl, DNS_POSITIVE_TTL_MAX)
        elif answer.outcome in _NEGATIVE:
            ttl = min(answer.ttl, DNS_NEGATIVE_TTL_MAX)
        else:
            return  # SERVFAIL / TIMEOUT: ask again next time
        # The answer holds only while every CNAME/DNAME that led to it holds (RFC 2181 §5.2).
        ttl = min([ttl, *(int(rrset.ttl) for rrset in answer.chain)])
        if ttl <= 0:
            return
        key = cache_key(answer.qname)
        self._entries[key] = (answer, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
