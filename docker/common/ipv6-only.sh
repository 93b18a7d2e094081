#!/bin/sh
# Make this container IPv6-only: remove every IPv4 address but loopback's. A Docker
# network gives each container an IPv4 address even with enable_ipv6 (only Engine >= 28
# can leave it out, with enable_ipv4: false); removing it works on every Engine. Needs
# NET_ADMIN. Prints what is left on stderr, so the demo shows the container is IPv6-only.
# Usage: ipv6-only.sh NAME
set -eu
for dev in $(ip -o -4 addr show scope global | awk '{print $2}' | sort -u); do
    ip -4 addr flush dev "$dev" scope global
done
inet=$(ip -o -4 addr show scope global | awk '{printf "%s%s", sep, $4; sep=" "}')
inet6=$(ip -o -6 addr show scope global | awk '{printf "%s%s", sep, $4; sep=" "}')
echo "$1: IPv6 only: inet ${inet:-none}; inet6 ${inet6:-none}" >&2  # stdout is the demo's result
