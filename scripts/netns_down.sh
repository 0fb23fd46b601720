#!/usr/bin/env bash
# Remove every namespace made by netns_up.sh with this prefix (veth ends go with them).
set -uo pipefail
P=${NETNS_PREFIX:-mao}
for ns in $(ip netns list | awk '{print $1}' | grep -E "^${P}(hub|drv|n[0-9]+)$"); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null   # only processes inside our namespace
    ip netns del "$ns"
done
exit 0
