#!/bin/sh
# dns service: NSD, authoritative for nat64.test and ipv4only.arpa, from the same
# nsd.conf.template and zone files as tests/network/netlab.py.
set -eu
here=$(dirname "$0")
run=/run/nsd-demo
mkdir -p "$run"
sed -e "s|\${LISTEN}|${LISTEN}|g" -e "s|\${ZONES_DIR}|${here}|g" -e "s|\${RUN_DIR}|${run}|g" \
    "$here/nsd.conf.template" > "$run/nsd.conf"
echo "dns: NSD on [$LISTEN]:53"
exec nsd -d -c "$run/nsd.conf"
