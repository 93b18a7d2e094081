#!/bin/sh
# client service: an app that only knows proxy environment variables. Fetches the
# IPv4-only origin by name and by IPv4 literal through proxy64 and prints what it got.
set -u
"$(dirname "$0")/../common/ipv6-only.sh" client || exit 1
fetch() {
    label=$1
    shift
    tries=0
    while [ $tries -lt 10 ]; do
        if out=$(curl -sS --fail-with-body --max-time 5 "$@" 2>&1); then
            echo "client: $label -> $out"
            return 0
        fi
        tries=$((tries + 1))
        sleep 1
    done
    echo "client: $label FAILED: $out"
    return 1
}
status=0
# ALL_PROXY=socks5h://...: curl hands the name to proxy64 (DNS64 happens there)
fetch "SOCKS5 by name    http://$ORIGIN_NAME/" "http://$ORIGIN_NAME/" || status=1
fetch "SOCKS5 by literal http://$ORIGIN_IPV4/" "http://$ORIGIN_IPV4/" || status=1
# HTTP proxy: plain forwarding, and a CONNECT tunnel (-p), as HTTPS_PROXY would use
fetch "HTTP proxy        http://$ORIGIN_NAME/" -x "$HTTP_PROXY_URL" "http://$ORIGIN_NAME/" \
    || status=1
fetch "HTTP CONNECT      http://$ORIGIN_IPV4/" -p -x "$HTTPS_PROXY" "http://$ORIGIN_IPV4/" \
    || status=1
exit $status
