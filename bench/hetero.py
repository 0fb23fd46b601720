"""Heterogeneous data parallelism: engine-nodes on different OpenCL devices of one host
(say its NVIDIA GPU and its PoCL CPU) train one model together.

    python -m bench.hetero [--devices nvidia portable] [--hidden 1024] [--global-batch 512] [--steps 60]
                           [--optimizer adam|sgd]

First each device alone (one node), then all of them in one ring.  The model is the
digits MLP widened to 64-H-H-10, so a step is real work for a CPU.  For the joint run it
reports the shares of the global batch over time (the driver sets them from each node's
measured samples/s), each node's compute per step, samples/s (global batch / median step
time, so a rebalancing step that compiles a new batch size does not count), held-out
accuracy, and how far the final weights are from single-process numpy training on the
same global batches (cluster.reference_fit): gradients weighted by samples make the
result independent of the shares, up to float32 rounding of each device.
"""
from __future__ import annotations

import argparse
from collections import OrderedDict

import numpy as np

from bench.allreduce import machine
from bench.scaling import fit_on_nodes
from cluster import ReferenceMLP, reference_fit

OPTIMIZERS = {"adam": {"name": "adam", "lr": 1e-3}, "sgd": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}


def build(hidden: int):
    from engine import nn
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(64, hidden)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(hidden, hidden)), ("relu2", nn.ReLU()), ("out", nn.Linear(hidden, 10))]))


def train(devices, model, spec: dict, data, B: int, steps: int, multiple: int):
    import engine
    res, stamps = fit_on_nodes(devices, model, engine.nn.functional.cross_entropy, spec, data, B, steps,
                               batch_multiple=multiple)
    step_s = float(np.median(np.diff(stamps[len(stamps) // 2:])))   # second half: after the warm-up builds
    return res, B / step_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", nargs="+", default=["nvidia", "portable"],
                    help="one engine-node per entry, with this --device (index or name substring)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--global-batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-multiple", type=int, default=32, help="shares are multiples of this")
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    a = ap.parse_args(argv)
    spec = OPTIMIZERS[a.optimizer]
    from engine.examples import digits
    xtr, ytr, xte, yte = digits.load_digits()
    B = a.global_batch
    print(f"## Heterogeneous training ({machine()}; digits MLP 64-{a.hidden}-{a.hidden}-10, "
          f"global batch {B}, {a.steps} steps, {spec})\n", flush=True)
    init = {k: v.numpy().copy() for k, v in build(a.hidden).state_dict().items()}

    def fresh():
        m = build(a.hidden)
        m.load_state_dict(init)
        return m

    print("| nodes (devices) | samples/s |\n|---|---|", flush=True)
    alone = {}
    for d in a.devices:
        _, alone[d] = train([d], fresh(), spec, (xtr, ytr), B, a.steps, a.batch_multiple)
        print(f"| 1 ({d}) | {alone[d]:,.0f} |", flush=True)
    res, together = train(a.devices, fresh(), spec, (xtr, ytr), B, a.steps, a.batch_multiple)
    print(f"| {len(a.devices)} ({' + '.join(a.devices)}) | {together:,.0f} |\n", flush=True)
    print(f"Together / fastest alone: {together / max(alone.values()):.2f}x; "
          f"together / sum of alone: {together / sum(alone.values()):.2f}\n")

    print("| step | shares | compute per node (ms) | all-reduce (ms) | loss |\n|---|---|---|---|---|")
    for h in res.history[:3] + res.history[3::max(1, len(res.history) // 8)] + res.history[-1:]:
        print(f"| {h['step']} | {h['shares']} | {', '.join(f'{c * 1e3:.1f}' for c in h['compute_s'])} "
              f"| {h['allreduce_s'] * 1e3:.1f} | {h['loss']:.4f} |")
    for e in res.events:
        print(f"- event: {e['text']}")

    ref = ReferenceMLP([64, a.hidden, a.hidden, 10])
    ref.params = {f"{i // 2}.{'weight' if i % 2 == 0 else 'bias'}": init[k] for i, k in enumerate(init)}
    want = reference_fit(ref, spec, xtr, ytr, B, res.step)
    got = dict(zip(want, res.params.values()))
    diff = max(float(np.abs(got[k] - w).max()) for k, w in want.items())
    scale = max(float(np.abs(w).max()) for w in want.values())
    acc = float((ref.logits(xte, got).argmax(1) == yte).mean())
    ref_acc = float((ref.logits(xte, want).argmax(1) == yte).mean())
    print(f"\nAfter {res.step} steps: held-out accuracy {acc * 100:.2f} % (single-process numpy reference: "
          f"{ref_acc * 100:.2f} %); largest weight difference from the reference {diff:.2e} "
          f"(largest weight {scale:.2f}).")


if __name__ == "__main__":
    main()
