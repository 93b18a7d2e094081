#!/bin/sh
# nat64 service: fill tayga.conf.template from the environment, create the TUN device,
# route the prefix and the pool into it, run tayga in the foreground (exec: same PID).
# The test network (tests/network/netlab.py) starts tayga through this same script.
# RENDER_ONLY=1 prints the config and exits (tests/test_compose.py compares it).
set -eu
here=$(dirname "$0")
conf="${TAYGA_CONF:-/etc/tayga.conf}"
render() {
    sed -e "s|\${TUN_DEVICE}|${TUN_DEVICE}|g" \
        -e "s|\${IPV4_ADDR}|${IPV4_ADDR}|g" \
        -e "s|\${PREFIX}|${PREFIX}|g" \
        -e "s|\${DYNAMIC_POOL}|${DYNAMIC_POOL}|g" \
        -e "s|\${DATA_DIR}|${DATA_DIR}|g" \
        "$here/tayga.conf.template"
}
if [ "${RENDER_ONLY:-0}" = 1 ]; then
    render
    exit 0
fi
mkdir -p "$DATA_DIR"
render > "$conf"
tayga --mktun --config "$conf"  # idempotent: a persistent device is reused
ip link set "$TUN_DEVICE" up
ip route replace "$DYNAMIC_POOL" dev "$TUN_DEVICE"
ip -6 route replace "$PREFIX" dev "$TUN_DEVICE"
echo "nat64: tayga translating $PREFIX <-> pool $DYNAMIC_POOL"
exec tayga --nodetach --config "$conf"
