#!/bin/sh
# dns service: NSD, authoritative for nat64.test and ipv4only.arpa, from nsd.conf.template
# and the zone files beside this script. The test network (tests/network/netlab.py)
# starts NSD through this same script, with its own RUN_DIR.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
run="${RUN_DIR:-/run/nsd-demo}"
mkdir -p "$run"
sed -e "s|\${LISTEN}|${LISTEN}|g" -e "s|\${ZONES_DIR}|${here}|g" -e "s|\${RUN_DIR}|${run}|g" \
    "$here/nsd.conf.template" > "$run/nsd.conf"
echo "dns: NSD on [$LISTEN]:53"
exec nsd -d -c "$run/nsd.conf"
