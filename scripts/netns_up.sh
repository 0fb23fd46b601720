#!/usr/bin/env bash
# Build N node namespaces plus a driver namespace, joined by veth pairs to a bridge that
# lives in its own hub namespace, so nothing is added to the host's network namespace.
#   scripts/netns_up.sh N [RATE]     e.g. scripts/netns_up.sh 3 200mbit
# Addresses (only inside these namespaces): driver 10.77.0.2, node i 10.77.0.(10+i).
# RATE, if given, puts a tbf bandwidth limit on every namespace's egress.
# Names start with $NETNS_PREFIX (default mao); scripts/netns_down.sh removes them.
set -euo pipefail
N=${1:?usage: netns_up.sh N [RATE]}; RATE=${2:-}; P=${NETNS_PREFIX:-mao}
[ "$(id -u)" = 0 ] || { echo "netns_up.sh: needs root (ip netns)" >&2; exit 77; }
ip netns add "${P}hub"
ip -n "${P}hub" link add br0 type bridge
ip -n "${P}hub" link set br0 up
ip -n "${P}hub" link set lo up

attach() {  # attach NAMESPACE INDEX ADDRESS
    local ns=$1 i=$2 addr=$3
    ip netns add "$ns"
    ip link add "${P}a$i" type veth peer name "${P}b$i"
    ip link set "${P}a$i" netns "$ns"
    ip link set "${P}b$i" netns "${P}hub"
    ip -n "$ns" link set "${P}a$i" name eth0
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "${P}hub" link set "${P}b$i" master br0 up
    if [ -n "$RATE" ]; then
        ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst 256kb latency 100ms
    fi
}

attach "${P}drv" d 10.77.0.2
for i in $(seq 0 $((N - 1))); do
    attach "${P}n$i" "$i" "10.77.0.$((10 + i))"
done
echo "netns_up: driver ${P}drv=10.77.0.2, nodes ${P}n0..${P}n$((N - 1))=10.77.0.10.. ${RATE:+rate $RATE}"
