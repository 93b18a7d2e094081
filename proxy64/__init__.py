"""proxy64: IPv6 through NAT64 for one app (SOCKS5/HTTP proxy, TUN mode, DNS64)."""

__version__ = "0.1.0"
