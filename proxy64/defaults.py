"""Every constant, limit and default of proxy64, named, in one place.

Modules import from here instead of writing numbers inline, so a limit is changed once
and the README's configuration reference can be checked against it.
"""

from __future__ import annotations

from ipaddress import IPv6Network

# --- Listeners -------------------------------------------------------------------------
SOCKS_LISTEN = "127.0.0.1:1080"
HTTP_LISTEN = "127.0.0.1:8080"
DNS_PORT = 53
SOCKS_PORT = 1080
HTTP_PORT = 8080

# --- NAT64 / DNS64 ----------------------------------------------------------------------
WELL_KNOWN_PREFIX = IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1
LOCAL_USE_PREFIX = IPv6Network("64:ff9b:1::/48")  # RFC 8215
DNS64_EXCLUDED = (IPv6Network("::ffff:0:0/96"),)  # RFC 6147 §5.1.4 default exclusion set
SYNTHESIZED_TTL_WITHOUT_SOA = 600  # RFC 6147 §5.1.7: "at most 600 seconds" when no SOA
IPV4ONLY_ARPA = "ipv4only.arpa."  # RFC 7050 §2.2
IPV4ONLY_ADDRESSES = ("192.0.0.170", "192.0.0.171")  # RFC 7050 §2.2 well-known IPv4
DNS_TIMEOUT = 2.0  # seconds per server and try
DNS_LIFETIME = 5.0  # seconds for a whole lookup across servers
DNS_CACHE_ENTRIES = 10_000
DNS_NEGATIVE_TTL_MAX = 900  # cap on negative caching (RFC 2308 §5 suggests 1–3 h max)
DNS_EDNS_PAYLOAD = 1232  # DNS flag day 2020 recommendation

# --- Dialing ----------------------------------------------------------------------------
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305 §5 "Connection Attempt Delay" recommended 250 ms
CONNECT_TIMEOUT = 10.0  # whole dial, all attempts
HANDSHAKE_TIMEOUT = 10.0  # client must finish SOCKS/HTTP handshake within this
IDLE_TIMEOUT = 300.0  # a tunnel with no bytes either way for this long is closed
SHUTDOWN_GRACE = 5.0  # SIGINT/SIGTERM: live tunnels get this long to finish
MAX_CONNECTIONS = 4096

# --- Protocol limits --------------------------------------------------------------------
HTTP_MAX_HEAD = 64 * 1024  # bytes of request head before 431/400
RELAY_CHUNK = 64 * 1024  # one receive in the copy path
SPLICE_THRESHOLD = 256 * 1024  # bytes a direction carries before it moves to splice(2)
SPLICE_CHUNK = 1024 * 1024
UDP_ASSOCIATION_IDLE = 120.0
UDP_MAX_DATAGRAM = 65_535

# --- SOCKS front end (proxy64/proto/socks*.py, proxy64/net/socks_*.py) ---------------------
SOCKS4_MAX_FIELD = 255  # bytes of a SOCKS4 USERID / SOCKS4a HOSTNAME before its NUL
SOCKS_HANDSHAKE_READ = 4096  # one receive while the SOCKS handshake is parsed
UDP_TARGET_CACHE = 256  # resolved destinations remembered per UDP association
