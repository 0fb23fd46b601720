"""Engine-nodes that step on their own: one process, one node and two nodes (one per GPU
where there are two) on the issue-14 MLPs, with each step split into compute, all-reduce
and the rest.

    python -m bench.node_lockstep [--models wide big] [--steps 40] [--notes bench/NOTES.md]

Rows per model, one after another in this run: `local` (engine.training_step compiled, loss
read every step), `1 node` (Cluster.fit, one `run`, a ring of one: gradients stay on the
device) and `2 nodes` (one engine-node per device, `--device i`; gradients downloaded,
ring all-reduced over loopback, uploaded; with --overlap-mb a further row whose nodes
all-reduce buckets while backward runs).  samples/s counts steps after `warmup` by the
end times the nodes report; efficiency = samples/s(2) / (2 x samples/s(1 node)).
compute = forward + backward (+ gradient download on two nodes), slowest rank, median;
all-reduce = rank 0's, median; rest = step - compute - all-reduce (upload, update,
snapshot, checksum, reports).  Nodes report every 0.5 s; Adam, float32.
"""
from __future__ import annotations

import argparse

import numpy as np

from bench.allreduce import machine
from bench.common import relu_mlp
from bench.scaling import fit_on_nodes

SPEC = {"name": "adam", "lr": 1e-3}


def models(name):
    from engine import nn
    sizes, B = {"wide": ((784, 1024, 1024, 10), 512), "big": ((784, 4096, 4096, 10), 1024)}[name]
    rng = np.random.default_rng(0)
    x, y = rng.random((max(8192, 4 * B), 784), dtype=np.float32), rng.integers(0, 10, max(8192, 4 * B))

    def build():
        return relu_mlp(nn, sizes)
    return f"MLP {'-'.join(map(str, sizes))}", build, x, y, B


def local(build, x, y, B, steps, warmup):
    import time
    import engine
    from engine import optim
    from engine.nn import functional as F
    model = build()
    step = engine.training_step(model, F.cross_entropy, optim.Adam(model.parameters(), lr=SPEC["lr"]))
    rng, stamps = np.random.default_rng(1), []
    for _ in range(steps):
        idx = rng.integers(0, len(x), B)
        float(step(x[idx], y[idx]).numpy())
        stamps.append(time.perf_counter())
    t = stamps[-1] - stamps[warmup - 1]
    return (steps - warmup) * B / t, t / (steps - warmup), None


def nodes(devices, build, x, y, B, steps, warmup, node_args=()):
    from engine.nn import functional as F
    res, _ = fit_on_nodes(devices, build(), F.cross_entropy, SPEC, (x, y), B, steps, report_s=0.5,
                          batch_multiple=B // len(devices), rebalance_tolerance=1.0, node_args=node_args)
    timed = res.history[warmup:]
    t = timed[-1]["t"] - res.history[warmup - 1]["t"]
    compute = float(np.median([max(h["compute_s"]) for h in timed]))
    ar = float(np.median([h["allreduce_s"] for h in timed]))
    return len(timed) * B / t, t / len(timed), (compute, ar)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["wide", "big"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--notes", help="append the table to this file")
    ap.add_argument("--overlap-mb", type=float, default=0,
                    help="also run 2 nodes with --overlap-mb (buckets all-reduced while backward runs)")
    a = ap.parse_args(argv)
    from bench.scaling import gpu_indices
    from engine.runtime import get_device
    gpus = gpu_indices()
    devices = [str(i) for i in gpus[:2]] if len(gpus) >= 2 else [None, None]
    lines = [f"**Engine-nodes stepping on their own** (`python -m bench.node_lockstep`, {machine()}; "
             f"devices {', '.join(get_device(d).name for d in devices)}; {a.steps} steps, {a.warmup} warm-up)", "",
             "| model | batch | run | samples/s | vs local | efficiency | step | compute | all-reduce | rest |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    ms = lambda s: f"{s * 1e3:.2f} ms"
    for key in a.models:
        title, build, x, y, B = models(key)
        base = one = None
        for run, fn in (("local (compiled step)", lambda: local(build, x, y, B, a.steps, a.warmup)),
                        ("1 node", lambda: nodes(devices[:1], build, x, y, B, a.steps, a.warmup)),
                        ("2 nodes", lambda: nodes(devices, build, x, y, B, a.steps, a.warmup)),
                        *([(f"2 nodes, --overlap-mb {a.overlap_mb:g}",
                            lambda: nodes(devices, build, x, y, B, a.steps, a.warmup,
                                          ("--overlap-mb", str(a.overlap_mb))))] if a.overlap_mb else [])):
            try:
                sps, step, split = fn()
            except Exception as e:      # one failed configuration must not lose the others' numbers
                lines.append(f"| {title} | {B} | {run} | failed: {type(e).__name__}: {str(e)[:200]} |")
                print(lines[-1], flush=True)
                continue
            base = base or sps
            if run == "1 node":
                one = sps
            eff = f"{sps / (2 * one) * 100:.0f}%" if run.startswith("2 nodes") and one else "-"
            extra = f"{ms(split[0])} | {ms(split[1])} | {ms(step - split[0] - split[1])}" if split else "- | - | -"
            lines.append(f"| {title} | {B} | {run} | {sps:,.0f} | {sps / base:.2f}x | {eff} | {ms(step)} | {extra} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if a.notes:
        with open(a.notes, "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
