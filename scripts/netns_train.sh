#!/usr/bin/env bash
# Train the digits MLP across N engine-node daemons, each in its own network namespace
# (see netns_up.sh), with the driver in a namespace of its own.  Prints one JSON line.
#   scripts/netns_train.sh [N] [RATE]      e.g. scripts/netns_train.sh 3 100mbit
# Cleans up the namespaces on exit, success or not.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}; RATE=${2:-}; P=${NETNS_PREFIX:-mao}; PY=${PYTHON:-$PWD/.venv/bin/python}
EPOCHS=${EPOCHS:-4}
[ "$(id -u)" = 0 ] || { echo "netns_train.sh: needs root (ip netns)" >&2; exit 77; }
export ENGINE_NODE_SECRET=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n') PYTHONPATH=$PWD OMP_NUM_THREADS=1
# the namespaces stand in for hosts: their ring must cross the (tc-limited) veth links, not
# the Unix sockets and shared memory that nodes sharing this /tmp would otherwise find
export ENGINE_NODE_IPC_DIR=off
LOGS=$(mktemp -d)
pids=()
cleanup() {  # SIGTERM first: nodes say bye and exit cleanly; netns_down.sh kills what is left
    [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
    scripts/netns_down.sh; rm -rf "$LOGS"
}
trap cleanup EXIT
scripts/netns_down.sh   # leftovers of an interrupted run
scripts/netns_up.sh "$N" $RATE >&2

addrs=()
for i in $(seq 0 $((N - 1))); do
    ip=10.77.0.$((10 + i))
    ip netns exec "${P}n$i" "$PY" -m cluster.node --listen "tcp://$ip:7070" --metrics "$ip:9100" \
        --peer-timeout 20 >"$LOGS/n$i.out" 2>"$LOGS/n$i.err" &
    pids+=($!)
    addrs+=("tcp://$ip:7070")
done
for i in $(seq 0 $((N - 1))); do   # wait for each "engine-node ready" line
    for _ in $(seq 100); do grep -q ready "$LOGS/n$i.out" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$LOGS/n$i.out" || { echo "node $i did not start:" >&2; cat "$LOGS/n$i.err" >&2; exit 1; }
done

ip netns exec "${P}drv" "$PY" - "$EPOCHS" "${addrs[@]}" <<'PYEOF'
import json, sys, time
from cluster import Cluster, ReferenceMLP
from engine.examples.digits import load_digits
epochs, addrs = int(sys.argv[1]), sys.argv[2:]
xtr, ytr, xte, yte = load_digits()
model = ReferenceMLP([64, 128, 64, 10], seed=0)
t = time.perf_counter()
res = Cluster(addrs, __import__("os").environ["ENGINE_NODE_SECRET"], heartbeat_s=0.5).fit(
    model, None, {"name": "adam", "lr": 2e-3}, (xtr, ytr), epochs=epochs, global_batch=64)
dt = time.perf_counter() - t
acc = float((model.logits(xte).argmax(1) == yte).mean())
print(json.dumps({"nodes": addrs, "steps": res.step, "accuracy": acc, "seconds": dt,
                  "samples_per_s": res.step * 64 / dt, "final_loss": res.history[-1]["loss"],
                  "world": res.history[-1]["world"]}))
PYEOF
