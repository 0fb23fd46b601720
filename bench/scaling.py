"""Data-parallel scaling of MLP training over 1, 2 and 4 engine-node processes.

    ./dev bench scaling [--nodes 1 2 4] [--steps 40] [--notes bench/NOTES.md]

Two workloads, both with a fixed global batch split evenly across nodes:
  * the digits example (engine MLP 64-128-64-10, engine IR shipped to each node,
    compiled there for the default OpenCL device), global batch 256;
  * a compute-heavier numpy reference MLP 784-1024-1024-10 on MNIST-shaped random data,
    global batch 512, to show scaling when compute outweighs the all-reduce.
samples/s counts steps after a warm-up (first builds excluded); efficiency is
samples/s(n) / (n x samples/s(1)).  All processes share this machine's cores.
"""
from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.allreduce import env as worker_env, machine
from cluster import Cluster, ReferenceMLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_nodes(n: int, secret: str, devices=None, node_args=()):
    """n engine-node processes on free loopback ports; devices[i], if given, is node i's
    --device (None: the default device); node_args go to every node's command line.  A node that fails to start raises with what it wrote to stderr."""
    env = worker_env(ENGINE_NODE_SECRET=secret)
    procs = []
    for i in range(n):
        dev = ["--device", devices[i]] if devices and devices[i] else []
        err = tempfile.TemporaryFile("w+")   # a file, not a pipe nobody reads
        p = subprocess.Popen([sys.executable, "-m", "cluster.node", "--listen", "tcp://127.0.0.1:*",
                              "--metrics", "127.0.0.1:0", *dev, *node_args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=err, text=True)
        p.err = err
        procs.append(p)
    addrs = []
    for p in procs:
        line = p.stdout.readline()
        if not line.startswith("engine-node ready"):
            for q in procs:
                q.kill()
            p.wait(10)
            p.err.seek(0)
            raise RuntimeError(f"engine-node {' '.join(p.args[3:])} did not start: {line!r}\n{p.err.read()[-2000:]}")
        addrs.append(dict(kv.split("=", 1) for kv in line.split()[2:])["control"])
    return procs, addrs


def fit_on_nodes(devices, model, loss_fn, spec: dict, data, B: int, steps: int, node_args=(), **cluster_kw):
    """Train on fresh engine-node processes, one per entry of `devices`; returns the
    FitResult and the wall-clock time at the end of each step."""
    secret = secrets.token_hex(8)
    procs, addrs = start_nodes(len(devices), secret, devices, node_args)
    stamps = []
    try:
        res = Cluster(addrs, secret, heartbeat_s=1.0, missed=30, **cluster_kw).fit(
            model, loss_fn, spec, data, epochs=10**6, global_batch=B, max_steps=steps,
            on_step=lambda rec: stamps.append(time.perf_counter()))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    return res, stamps


def measure(n, build, loss_fn, data, B, steps, warmup):
    res, stamps = fit_on_nodes([None] * n, build(), loss_fn, {"name": "sgd", "lr": 0.01, "momentum": 0.9}, data, B,
                               steps, batch_multiple=B // n, rebalance_tolerance=1.0)
    t = stamps[-1] - stamps[warmup - 1]
    timed = res.history[warmup:]
    compute = np.median([max(h["compute_s"]) for h in timed])
    ar = np.median([h["allreduce_s"] for h in timed])
    return (steps - warmup) * B / t, t / len(timed), compute, ar


def table(title, nodes, run):
    lines = [f"**{title}**", "",
             "| nodes | samples/s | efficiency | step | compute (slowest node) | all-reduce | rest |",
             "|---|---|---|---|---|---|---|"]
    base = None
    for n in nodes:   # step = wall time per step; rest = step - compute - all-reduce (driver, optimizer, checks)
        sps, step, compute, ar = run(n)
        base = base or sps
        ms = lambda s: f"{s * 1e3:.1f} ms"
        lines.append(f"| {n} | {sps:,.0f} | {sps / (n * base) * 100:.0f}% | {ms(step)} | {ms(compute)} | {ms(ar)} "
                     f"| {ms(step - compute - ar)} |")
        print(lines[-1], flush=True)
    return lines + [""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--skip-engine", action="store_true", help="only the numpy reference workload")
    ap.add_argument("--notes", help="append the tables under the '## All-reduce' section's scaling heading")
    a = ap.parse_args(argv)
    lines = [f"### Scaling (`./dev bench scaling`, {machine()})", ""]   # machine() gives the load average
    if not a.skip_engine:
        import engine
        from engine.examples import digits
        xtr, ytr, _, _ = digits.load_digits()
        lines += table("digits example MLP (engine IR on the default OpenCL device), global batch 256", a.nodes,
                       lambda n: measure(n, lambda: digits.build_model("mlp"), engine.nn.functional.cross_entropy,
                                         (xtr, ytr), 256, a.steps, a.warmup))
    rng = np.random.default_rng(0)
    x, y = rng.random((8192, 784), dtype=np.float32), rng.integers(0, 10, 8192)
    lines += table("numpy reference MLP 784-1024-1024-10, global batch 512", a.nodes,
                   lambda n: measure(n, lambda: ReferenceMLP([784, 1024, 1024, 10]), None, (x, y), 512,
                                     a.steps, a.warmup))
    text = "\n".join(lines)
    print("\n" + text)
    if a.notes:
        with open(a.notes, "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
