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
LISTEN_BACKLOG = 1024  # listen(2) backlog of every listener
ACCEPT_BACKOFF = 0.1  # seconds to wait when accept() fails for lack of fds or memory
ACCEPT_BATCH = 32  # connections accepted in a row before the accept loop yields

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
DNS_PREFIX_CHANGE_RETRIES = 3  # lookups of one name while the NAT64 prefix keeps changing
DNS_NEGATIVE_TTL_MAX = 900  # cap on negative caching (RFC 2308 §5 suggests 1–3 h max)
DNS_EDNS_PAYLOAD = 1232  # DNS flag day 2020 recommendation

# --- Dialing ----------------------------------------------------------------------------
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305 §5 "Connection Attempt Delay" recommended 250 ms
CONNECT_TIMEOUT = 10.0  # whole dial, all attempts
HANDSHAKE_TIMEOUT = 10.0  # client must finish SOCKS/HTTP handshake within this
IDLE_TIMEOUT = 300.0  # a tunnel with no bytes either way for this long is closed
SHUTDOWN_GRACE = 5.0  # SIGINT/SIGTERM: live tunnels get this long to finish
MAX_CONNECTIONS = 4096
# The open-files limit `serve` raises its soft limit to (up to the hard limit): per
# connection two sockets and a pipe (two fds) for each direction that splices, plus room
# for the listeners, DNS sockets, metrics and logs.
FDS_PER_CONNECTION = 6
FDS_RESERVED = 256
HOST_INFO_REFRESH = 1.0  # /etc/hosts and this host's addresses are re-read at most this often
# Slots one client address may hold at once: one client cannot starve the rest.
MAX_CLIENT_CONNECTIONS = 1024
# Failed authentications (proxy64/proto/auth_delay.py): after an address's first failure,
# each answer to it is held this much more per failure, doubling up to the cap, until it
# has not failed for AUTH_FAILURE_FORGET seconds.
AUTH_FAILURE_DELAY = 0.25
AUTH_FAILURE_DELAY_MAX = 4.0
AUTH_FAILURE_FORGET = 60.0
AUTH_FAILURE_TRACKED = 10_000  # addresses remembered at once (the oldest is dropped)

# --- Protocol limits --------------------------------------------------------------------
HTTP_MAX_HEAD = 64 * 1024  # bytes of request head before 431/400
RELAY_CHUNK = 64 * 1024  # one receive in the copy path
SPLICE_THRESHOLD = 256 * 1024  # bytes a direction carries before it moves to splice(2)
UDP_ASSOCIATION_IDLE = 120.0
UDP_MAX_DATAGRAM = 65_535

# --- DNS64 resolver, cache and server ---------------------------------------------------
DNS64_MAX_CHAIN = 16  # CNAME/DNAME links followed before giving up (loop guard)
DNS_POSITIVE_TTL_MAX = 86_400  # cap on positive caching (RFC 2181 §8 allows far more)
DNS_UDP_PAYLOAD_WITHOUT_EDNS = 512  # RFC 1035 §4.2.1; larger needs EDNS0 (RFC 6891 §6.2.5)
DNS_TCP_MAX_MESSAGE = 65_535  # RFC 1035 §4.2.2 two-byte length prefix
DNS_SERVER_MAX_INFLIGHT = 256  # UDP queries handled at once by the DNS64 server
DNS_SERVER_MAX_TCP = 64  # TCP connections the DNS64 server keeps at once
DNS_SERVER_TCP_IDLE = 10.0  # seconds a DNS TCP connection may idle (RFC 7766 §6.2.3)
DNS64_LISTEN = "127.0.0.1:5353"  # default of `proxy64 dns64 --listen`
PTR_CNAME_TTL = 600  # TTL of the RFC 6147 §5.3.1 CNAME for PTR inside the prefix
DISCOVERY_TIMEOUT = 5.0  # seconds for the whole RFC 7050 ipv4only.arpa lookup
PROBE_TIMEOUT = 3.0  # seconds for one RFC 7050 §3 connectivity probe dial
DNS_SERVER_BIND_TRIES = 20  # port 0: attempts to find one port free for UDP and TCP
DNS64_RDATA_CACHE = 4096  # address sets whose AAAA rdata the DNS64 server keeps built

# --- HTTP proxy (proxy64/proto/http_session.py, proxy64/net/http_exchange.py) -----------
HTTP_KEEPALIVE_TIMEOUT = 60.0  # a client may sit idle this long between requests (and < idle)
HTTP_LINGER_TIME = 2.0  # after an error answer: drain the client this long before closing
HTTP_LINGER_BYTES = 256 * 1024  # ... or this many bytes (RFC 9112 §9.6 "lingering close")
HTTP_DIAL_GRACE = 5.0  # on top of --connect-timeout: a dialer that never returns gets a 504
HTTP_BODY_CHUNK = 256 * 1024  # one receive when forwarding: fewer h11 events, ~1.8x MB/s vs 64K
HTTP_AUTHORITY_CACHE = 1024  # request authorities whose parsed Destination is remembered
HTTP_AUTHORITY_CACHED_MAX = 270  # longer ones (beyond a DNS name, port, IPv6 zone): not kept
DESTINATION_TEXT_CACHE = 1024  # Destinations whose host:port text is remembered (logs, report)

# --- SOCKS front end (proxy64/proto/socks*.py, proxy64/net/socks_*.py) ---------------------
SOCKS4_MAX_FIELD = 255  # bytes of a SOCKS4 USERID / SOCKS4a HOSTNAME before its NUL
SOCKS_HANDSHAKE_READ = 4096  # one receive while the SOCKS handshake is parsed
UDP_TARGET_CACHE = 256  # resolved destinations remembered per UDP association
SOCKS_LINGER_TIME = 1.0  # after a refusal: read and discard this long before closing, so
SOCKS_LINGER_BYTES = 64 * 1024  # ... a client's unread bytes do not turn into an RST that
# destroys the refusal before the client reads it (same idea as RFC 9112 §9.6)

# --- Relay, dialer, serve/run (core) ------------------------------------------------------
SPLICE_RELEASE_AFTER = 1.0  # a splicing direction silent this long gives its pipe back
SERVE_MAX_WORKERS = 64  # --workers upper bound
SERVE_DISCOVERY_TIMEOUT = 6.0  # start-up waits at most this long for RFC 7050 discovery

# --- NAT64 prefix discovery and re-discovery (proxy64/net/nat64_watch.py) -----------------
PREF64_STARTUP_WAIT = 0.5  # `auto` start-up listens this long for a PREF64 RA (RFC 8781)
NETWORKCTL_TIMEOUT = 2.0  # seconds for `networkctl --json=short status`
NAT64_REDISCOVER_MIN = 2.0  # never ask again sooner (a TTL or lifetime of 0 or 1 s)
NAT64_REDISCOVER_MAX = 3600.0  # ask again at least this often, whatever the TTL says
NAT64_RETRY = 60.0  # after nothing was found or no DNS server answered
REPORT_MAX_DESTINATIONS = 10_000  # readiness report rows; more are added up in one row
REPORT_MAX_ADDRESSES = 16  # addresses dialed kept per report row (for verdicts and JSON)
REPORT_MAX_SPANS = 64  # (start, end) times kept per report row, to match Happy Eyeballs
# An AF_INET attempt is the IPv4 half of a Happy Eyeballs race (RFC 8305 §5) when it starts
# while an IPv6 connection to the same name is open, or at most this long before one.
HAPPY_EYEBALLS_LEAD = 0.5

# --- Exit statuses of `run` and `tun run` (README "IPv6-only readiness") -----------------
# Otherwise they exit with CMD's own status (2 for a bad option). 120 sits below 124-127,
# which timeout(1), env(1) and shells keep for "the wrapper, not the command".
EXIT_NOT_READY = 120  # --require LEVEL: a destination broke the level (listed on stderr)

# --- TUN mode (proxy64/flow, proxy64/tun) -----------------------------------------------
TUN_MTU = 65520  # the largest Linux accepts on a TUN: the biggest lever for a userspace stack
TUN_MIN_MTU = 1280  # RFC 8200 §5: the IPv6 minimum link MTU
TUN_NETWORK = "fd64::/64"  # ULA (RFC 4193) between the app and proxy64
TUN_GATEWAY = "fd64::1"  # proxy64's side: default route and DNS resolver address
TUN_CLIENT = "fd64::2"  # the app's address
TUN_NETWORK_V4 = "10.64.0.0/24"  # only with --ipv4 (464XLAT-style CLAT side)
TUN_GATEWAY_V4 = "10.64.0.1"
TUN_CLIENT_V4 = "10.64.0.2"
# Without --ipv4: an AF_INET socket's packets still reach the TUN, so the report can name
# them, through an IPv4 default route whose source is a local route (RFC 7335 service
# continuity prefix, as CLATs use), never an interface address: glibc's AI_ADDRCONFIG
# counts any IPv4 interface address but 127.0.0.1, and names would resolve to A again.
TUN_HIDDEN_V4_SOURCE = "192.0.0.2"
TUN_HIDDEN_V4_GATEWAY = "192.0.0.1"  # the source of the network-unreachable answers
TUN_DEVICE_NAME = "p64tun0"
TUN_MAX_FLOWS = 4096  # TCP + UDP flows at once; a new flow beyond is refused
TUN_MAX_HALF_OPEN = 256  # SYNs waiting on their dial; beyond, SYNs are dropped (flood bound)
TUN_TCP_RX_BUFFER = 1024 * 1024  # app → destination bytes held per flow (advertised window)
TUN_TCP_TX_BUFFER = 1024 * 1024  # destination → app bytes held per flow
TUN_TCP_WSCALE = 5  # RFC 7323: 1 MiB buffer needs a shift of 5 (65535 << 5 ≈ 2 MiB)
TUN_TCP_RTO_INITIAL = 1.0  # RFC 6298 §2.1
TUN_TCP_RTO_MIN = 0.2  # Linux's floor; RFC 6298 §2.4 says 1 s (a deviation, documented)
TUN_TCP_RTO_MAX = 60.0  # RFC 6298 §2.5
TUN_TCP_MAX_RETRIES = 8  # retransmissions before the flow is reset
TUN_TCP_FIN_TIMEOUT = 60.0  # FIN-WAIT-2 after the relay closed the flow (Linux tcp_fin_timeout)
TUN_UDP_IDLE = 60.0  # a UDP flow with no datagram either way for this long is closed
TUN_UDP_QUEUE = 64  # datagrams held per UDP flow while its target is being resolved
TUN_ECHO_TIMEOUT = 2.0  # seconds to wait for an echo reply through the egress
TUN_READ_BATCH = 256  # packets read from the TUN per wakeup before processing
TUN_DEVICE_QUEUE = 1024  # packets queued toward the app before they are dropped
TUN_NAME_MEMORY = 10_000  # addresses remembered from our DNS64 answers (for the report)

# --- Packet codec (proxy64/packet) -------------------------------------------------------
PACKET_DEFAULT_HOP_LIMIT = 64  # TTL/hop limit of packets we build (RFC 1700 / Linux default)
ICMPV4_ERROR_MAX = 576  # RFC 1812 §4.3.2.3: an ICMPv4 error quotes as much as fits in 576 bytes
ICMPV6_ERROR_MAX = 1280  # RFC 4443 §2.4(c): an ICMPv6 error must not exceed the minimum MTU

# --- HTTP forwarding bodies (proxy64/net/http_exchange.py, http_upstream.py) ---
# A Content-Length body with at least this much still to arrive after its head bypasses
# h11 (exact byte count between the sockets); smaller ones stay in h11 (cheaper per request).
HTTP_RAW_BODY_MIN = 64 * 1024
# ... and is moved with splice(2) when this much is left (both ends real sockets).
HTTP_SPLICE_BODY_MIN = 256 * 1024

# --- TUN throughput (proxy64/tun/socket_stream.py, proxy64/tun/flow_stream.py) ---------
TUN_FAIR_SHARE = 1024 * 1024  # bytes a TUN flow's stream moves before it yields to others

# --- Bulk relay: splice(2) loop (proxy64/net/splice.py) -----------------------------------
# F_SETPIPE_SZ (the kernel keeps 64 KiB above pipe-max-size); one socket→pipe splice(2)
# asks for the pipe's room, so up to this much per call
SPLICE_PIPE_SIZE = 1024 * 1024
SPLICE_YIELD_EVERY = 4 * 1024 * 1024  # bytes a splicing direction moves between checkpoints
# dst's TCP_NOTSENT_LOWAT while a direction splices (trio's 16 KiB is put back after): the
# unsent bytes the kernel may queue; loopback's send buffer autotunes up to 4 MiB here.
SPLICE_NOTSENT_LOWAT = 4 * 1024 * 1024
# The task path pushes a tunnel's idle deadline at most once per this many seconds (or
# idle_timeout / 16 if smaller), not per chunk: a tunnel closes up to this late.
RELAY_IDLE_SLACK = 1.0

# --- serve --workers: supervision (proxy64/net/supervisor.py) -----------------------------
WORKER_RESTART_FIRST_DELAY = 0.1  # seconds before restarting a worker that died
WORKER_RESTART_MAX_DELAY = 30.0  # the delay doubles per quick death in a row, up to this
WORKER_HEALTHY_AFTER = 10.0  # a worker that ran this long restarts after the first delay again
WORKER_STOP_MARGIN = 5.0  # after SIGINT/SIGTERM: shutdown_grace + this, then SIGKILL by PID
WORKER_HEARTBEAT = 1.0  # seconds between a worker's heartbeats to the supervisor, at most
WORKER_TIMEOUT = 10.0  # a worker silent this long (hung, stopped) is killed and restarted
WORKER_TIMEOUT_MIN = 1.0  # worker_timeout's floor: a busy healthy loop may pause this long
WORKER_BEATS_PER_TIMEOUT = 4  # heartbeats (and supervisor looks) per worker_timeout, at least

# --- The cyclic garbage collector while serving (proxy64/serving.py) ----------------------
# Allocations between two young-generation collections (CPython's default: 700). A
# connection's objects die by reference counting (no cycles per connection), so a young
# collection mostly walks the live state of connections in flight and promotes it; fewer
# collections walk it fewer times.
GC_YOUNG_THRESHOLD = 10_000

# --- Hub-driven front of a connection (proxy64/net/relay_hub.py, executor.py) ------------
HUB_POLL_ROUNDS = 16  # epoll polls without waiting per wake-up of the hub, at the most
HUB_EMPTY_POLLS = 2  # ... stopping after this many found nothing (an empty poll: a wasted syscall)
HUB_TIMER_COMPACT = 256  # cancelled hub timers tolerated before the heap may be compacted

# --- TUN stack heap (proxy64/tun/heap.py): freed memory kept for reuse at bulk speed ---
TUN_HEAP_TRIM_THRESHOLD = 32 * 1024 * 1024  # glibc M_TRIM_THRESHOLD (default 128 KiB)
TUN_HEAP_TOP_PAD = 4 * 1024 * 1024  # glibc M_TOP_PAD: heap grows in steps of this much
TUN_HEAP_MMAP_THRESHOLD = 4 * 1024 * 1024  # glibc M_MMAP_THRESHOLD (default 128 KiB)
TUN_SOCKET_READ_MAX = 1024 * 1024  # one read from a TUN flow's outbound socket, whole segments
TUN_RECEIVE_MAX = 1024 * 1024  # what TunTcpStream.receive_some() returns at most, no max_bytes
TUN_SOCKET_NOTSENT_LOWAT = 2 * 1024 * 1024  # TCP_NOTSENT_LOWAT of a TUN flow's socket

# Prometheus metrics (--metrics)
METRICS_SAMPLE_INTERVAL = 1.0  # seconds between copies of the live counts into the gauges
# proxy64_dial_duration_seconds buckets: a loopback dial takes well under 1 ms, a NAT64 path
# tens of ms, a name that needs DNS64 up to DNS_LIFETIME, a dial up to CONNECT_TIMEOUT
METRICS_DIAL_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
METRICS_STALE_AFTER = 10.0  # /healthz answers 503 when the event loop has not sampled this long
METRICS_REQUEST_TIMEOUT = 10.0  # seconds a metrics client may take to send its request
