#!/bin/sh
# proxy64 service: make the container IPv6-only and route the NAT64 prefix via the nat64
# container, then run proxy64 with the arguments given (compose.yaml: serve ... --egress
# nat64). Without PREFIX and NAT64_IPV6 (a bare `docker run` of the image) it only runs
# proxy64, which needs no NET_ADMIN.
set -eu
if [ -n "${PREFIX:-}" ] && [ -n "${NAT64_IPV6:-}" ]; then
    "$(dirname "$0")/../common/ipv6-only.sh" proxy64
    ip -6 route replace "$PREFIX" via "$NAT64_IPV6"
fi
exec proxy64 "$@"
