#!/bin/sh
# proxy64 service: IPv6 only; route the NAT64 prefix via the nat64 container, then run
# proxy64 with the arguments given (compose.yaml: serve ... --egress nat64).
set -eu
if [ -n "${PREFIX:-}" ] && [ -n "${NAT64_IPV6:-}" ]; then
    ip -6 route replace "$PREFIX" via "$NAT64_IPV6"
fi
exec proxy64 "$@"
