#!/bin/sh
# origin service: IPv4 only; route tayga's dynamic pool back via the nat64 container, then
# serve HTTP (reporting the peer address) and a UDP echo.
set -eu
ip route replace "$DYNAMIC_POOL" via "$NAT64_IPV4"
exec "${PYTHON:-python3}" "$(dirname "$0")/origin_server.py" "$@"
