"""One engine-node against the single-process engine, same model, device and batch
(issue 14's target: the node >= 0.9x the single-process compiled step).

    .venv/bin/python -m bench.node_vs_local [--models digits wide] [--steps 30] [--notes bench/NOTES.md]

Three rows per model, run one after another in this process's run:
  * local: engine.training_step (compiled: forward, backward and the fused optimizer update
    replayed from one launch list), loss read back every step;
  * node (device): one engine-node process driven by Cluster.fit, stepping on its own (one
    `run` message, progress reports every 0.5 s): weights, optimizer state and, in a ring of
    one, the gradients stay on the device; one float (loss, NaN if anything is not finite)
    read back per step;
  * node (host, before): the same node with --host-optimizer: the path before issue 14
    (weights uploaded and gradients downloaded every step, numpy Adam/SGD, host rollback
    copy and checksum every step).
samples/s counts the steps after `warmup` (first builds excluded; a node's steps by the end
times it reports); the three runs are
repeated `--rounds` times, interleaved, and each row is its best round (the machine is
shared: a neighbour's burst lands on one run, not on one configuration).  The node's "compute"
is its forward + backward including the gradient download; "rest" is the step's wall time
less compute and all-reduce (optimizer, snapshot, checksum, reports).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.allreduce import machine
from bench.scaling import fit_on_nodes

SPEC = {"name": "adam", "lr": 1e-3}


def models():
    from engine import nn
    from engine.examples import digits
    xd, yd, _, _ = digits.load_digits()
    rng = np.random.default_rng(0)
    xw, yw = rng.random((4096, 784), dtype=np.float32), rng.integers(0, 10, 4096)
    wide = lambda: nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                                 nn.Linear(1024, 10))
    return {"digits": ("digits MLP 64-128-64-10", lambda: digits.build_model("mlp"), xd.reshape(len(xd), -1), yd, 256),
            "wide": ("MLP 784-1024-1024-10", wide, xw, yw, 512),
            "big": ("MLP 784-4096-4096-10", lambda: nn.Sequential(nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                                                                   nn.ReLU(), nn.Linear(4096, 10)), xw, yw, 1024)}


def make_opt(params):
    from engine import optim
    return optim.Adam(params, lr=SPEC["lr"])


def local(build, x, y, B, steps, warmup, sync=True):
    import engine
    from engine.nn import functional as F
    model = build()
    step = engine.training_step(model, F.cross_entropy, make_opt(model.parameters()))
    rng, stamps, held = np.random.default_rng(1), [], []
    for k in range(steps):
        idx = rng.integers(0, len(x), B)
        loss = step(x[idx], y[idx])
        if sync or k < warmup:
            float(loss.numpy())
        else:
            held.append(loss)
        stamps.append(time.perf_counter())
    for loss in held:
        float(loss.numpy())
    stamps[-1] = time.perf_counter()
    t = stamps[-1] - stamps[warmup - 1]
    return (steps - warmup) * B / t, t / (steps - warmup), None


def node(build, x, y, B, steps, warmup, node_args):
    from engine.nn import functional as F
    # the node's own clock at the end of each step (history "t"), reports batched every 0.5 s
    res, _ = fit_on_nodes([None], build(), F.cross_entropy, SPEC, (x, y), B, steps, node_args=node_args, report_s=0.5)
    stamps = [h["t"] for h in res.history]
    t = stamps[-1] - stamps[warmup - 1]
    timed = res.history[warmup:]
    return (steps - warmup) * B / t, t / len(timed), (np.median([h["compute_s"][0] for h in timed]),
                                                      np.median([h["allreduce_s"] for h in timed]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["digits", "wide"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--notes", help="append the table to this file")
    ap.add_argument("--skip-host", action="store_true", help="leave out the --host-optimizer row")
    ap.add_argument("--roof", action="store_true",
                    help="add the local step with no read-back per step: how fast the device alone goes")
    a = ap.parse_args(argv)
    from engine.runtime import get_device
    dev = get_device(None)
    lines = [f"**One node vs the single-process engine** (`python -m bench.node_vs_local`, Adam, best of "
             f"{a.rounds} interleaved rounds of {a.steps} steps, {machine()}; "
             f"device {dev.platform} / {dev.name})", "",
             "| model | batch | run | samples/s | vs local | step | node compute | all-reduce | rest |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    ms = lambda s: f"{s * 1e3:.1f} ms"
    for key in a.models:
        title, build, x, y, B = models()[key]
        base, runs = None, (("local (compiled step)", lambda: local(build, x, y, B, a.steps, a.warmup)),
                            ("node, device", lambda: node(build, x, y, B, a.steps, a.warmup, ())),
                            ("node, host (--host-optimizer)",
                             lambda: node(build, x, y, B, a.steps, a.warmup, ("--host-optimizer",))))
        runs = runs[:2] if a.skip_host else runs
        if a.roof:
            runs = (*runs, ("local, loss read at the end (device-bound)",
                            lambda: local(build, x, y, B, a.steps, a.warmup, sync=False)))
        best = {}
        for r in range(a.rounds):
            for run, fn in runs:
                got = fn()
                print(f"  round {r}: {title} {run}: {got[0]:,.0f} samples/s", flush=True)
                if run not in best or got[0] > best[run][0]:
                    best[run] = got
        for run, _ in runs:
            sps, step, split = best[run]
            base = base or sps
            extra = (f"{ms(split[0])} | {ms(split[1])} | {ms(step - split[0] - split[1])}" if split else "- | - | -")
            lines.append(f"| {title} | {B} | {run} | {sps:,.0f} | {sps / base:.2f}x | {ms(step)} | {extra} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if a.notes:
        with open(a.notes, "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
