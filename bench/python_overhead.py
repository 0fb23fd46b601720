"""Python overhead of the plain (uncompiled) training loop: per op and per step.

    python -m bench.python_overhead [--steps 20] [--rounds 3] [--device pocl]

Per step: the main thread's CPU time (``time.thread_time``, which other processes on a
shared machine do not inflate the way they inflate wall time) of the MLP 784-512-512-10
b128 SGD-momentum step, plain and compiled, and where the plain step's time goes
(inclusive times of the loop's phases). Per op: the time to record one lazy op (graph
building only, nothing runs), beside torch eager's dispatch of the same op on a
one-element tensor where torch is installed.
"""
from __future__ import annotations

import argparse
import sys
import time
import timeit

import numpy as np

import engine
from bench.common import header, relu_mlp, try_torch
from engine import autograd, optim, realize
from engine.nn import functional as F

_tensor_module = sys.modules["engine.tensor"]


def _mlp_step(dev, compiled):
    engine.manual_seed(0)
    model = relu_mlp(engine.nn, (784, 512, 512, 10), device=dev)
    opt = engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, opt, engine.training_step(model, F.cross_entropy, opt, compiled=compiled)


class _Phases:
    """Inclusive main-thread time of a few functions (outermost call only)."""

    def __init__(self):
        self.spent, self._undo = {}, []

    def wrap(self, owner, name, label):
        fn = getattr(owner, name)
        depth = [0]

        def timed(*a, **k):
            if depth[0]:
                return fn(*a, **k)
            depth[0] += 1
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.thread_time() - t0
                depth[0] -= 1
        setattr(owner, name, timed)
        self._undo.append((owner, name, fn))

    def undo(self):
        for owner, name, fn in reversed(self._undo):
            setattr(owner, name, fn)


def per_step(dev, steps, rounds):
    rng = np.random.default_rng(0)
    xs = [(engine.tensor(rng.standard_normal((128, 784), dtype=np.float32), device=dev),
           engine.tensor(rng.integers(0, 10, 128), device=dev)) for _ in range(4)]
    loops = {"plain": _mlp_step(dev, False)[2], "compiled": _mlp_step(dev, True)[2]}
    for step in loops.values():
        for x, y in xs[:3]:
            step(x, y).item()
    cpu = {k: [] for k in loops}
    wall = {k: [] for k in loops}
    for _ in range(rounds):
        for name, step in loops.items():
            dev.synchronize()
            c0, t0 = time.thread_time(), time.perf_counter()
            for i in range(steps):
                loss = step(*xs[i % len(xs)])
            c1 = time.thread_time()
            loss.item()
            cpu[name].append((c1 - c0) / steps * 1e3)
            wall[name].append((time.perf_counter() - t0) / steps * 1e3)
    for name in loops:
        print(f"{name:9s} main-thread CPU {np.median(cpu[name]):6.2f} ms/step (rounds: "
              f"{' '.join(f'{v:.2f}' for v in cpu[name])}); wall {np.median(wall[name]):6.2f} ms/step")
    phases = _Phases()
    phases.wrap(realize, "realize", "realize (plan lookup, launches)")
    phases.wrap(optim.Optimizer, "step", "optimizer step")
    phases.wrap(autograd, "_backprop", "backward graph (autograd rules)")
    phases.wrap(F, "cross_entropy", "loss graph (cross_entropy)")
    phases.wrap(_tensor_module.Tensor, "backward", "Tensor.backward (graph + realize)")
    model, opt, _ = _mlp_step(dev, False)

    def plain(x, y):
        opt.zero_grad()
        t0 = time.thread_time()
        out = model(x)
        phases.spent["forward graph"] = phases.spent.get("forward graph", 0.0) + time.thread_time() - t0
        loss = F.cross_entropy(out, y)
        loss.backward()
        opt.step()
        return loss
    try:
        for x, y in xs[:3]:
            plain(x, y).item()
        phases.spent.clear()
        c0 = time.thread_time()
        for i in range(steps):
            loss = plain(*xs[i % len(xs)])
        total = time.thread_time() - c0
        loss.item()
    finally:
        phases.undo()
    print(f"plain step, main-thread CPU {total / steps * 1e3:.2f} ms; inclusive phases (ms/step):")
    for label, spent in sorted(phases.spent.items(), key=lambda kv: -kv[1]):
        print(f"  {label:36s} {spent / steps * 1e3:6.2f}")


def per_op(dev):
    a = engine.tensor(np.ones((128, 512), np.float32), device=dev)
    b = engine.tensor(np.ones((128, 512), np.float32), device=dev)
    c = engine.tensor(np.ones(512, np.float32), device=dev)
    w = engine.tensor(np.ones((512, 512), np.float32), device=dev, requires_grad=True)
    ops = {"a + b": lambda a, b, c, w: a + b, "a * 2.0": lambda a, b, c, w: a * 2.0,
           "a + c (broadcast)": lambda a, b, c, w: a + c, "a.relu()": lambda a, b, c, w: a.relu(),
           "a.sum(1)": lambda a, b, c, w: a.sum(1), "a @ w (records grad)": lambda a, b, c, w: a @ w}
    torch = try_torch()
    targs = None
    if torch is not None:
        targs = (torch.ones(1, 1), torch.ones(1, 1), torch.ones(1), torch.ones(1, 1, requires_grad=True))
    print(f"{'op':24s} {'engine (us)':>12s} {'torch eager, 1 element (us)':>28s}")
    for name, fn in ops.items():
        ours = min(timeit.repeat(lambda: fn(a, b, c, w), number=200, repeat=5)) / 200 * 1e6
        theirs = "-"
        if targs is not None:
            theirs = f"{min(timeit.repeat(lambda: fn(*targs), number=200, repeat=5)) / 200 * 1e6:.1f}"
        print(f"{name:24s} {ours:12.1f} {theirs:>28s}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    print(header(dev))
    per_step(dev, args.steps, args.rounds)
    per_op(dev)


if __name__ == "__main__":
    main()
