"""MLP training throughput: 784-512-512-10, batch 128, SGD momentum, the engine's compiled
step against PyTorch CPU (where installed), side by side in one run.

    python -m bench.mlp [--steps 50] [--device pocl]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import numpy as np

import engine
from bench.common import header, relu_mlp, try_torch
from engine.nn import functional as F

SIZES = (784, 512, 512, 10)


def mlp_step(dev):
    """The benchmarked MLP (SIZES, seed 0) and its compiled training step (SGD momentum,
    cross entropy)."""
    engine.manual_seed(0)
    model = relu_mlp(engine.nn, SIZES, device=dev)
    opt = engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return engine.training_step(model, F.cross_entropy, opt)


def engine_rate(dev, steps, batch):
    step = mlp_step(dev)
    rng = np.random.default_rng(0)
    xs = [engine.tensor(rng.standard_normal((batch, 784), dtype=np.float32), device=dev) for _ in range(4)]
    ys = [engine.tensor(rng.integers(0, 10, batch), device=dev) for _ in range(4)]
    t0 = time.perf_counter()
    step(xs[0], ys[0]).item()
    first = time.perf_counter() - t0
    for i in range(3):
        step(xs[i % 4], ys[i % 4])
    dev.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(xs[i % 4], ys[i % 4])
    loss.item()
    return steps * batch / (time.perf_counter() - t0), first


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default=None)
    ap.add_argument("--torch-python", default=None, help="an interpreter with torch, if this one has none")
    ap.add_argument("--repeat", type=int, default=3, help="alternate engine and torch this many times")
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    print(header(dev))
    for i in range(args.repeat):   # interleaved, so both see the same machine load
        rate, first = engine_rate(dev, args.steps, args.batch)
        line = f"engine: {rate:9.0f} samples/s"
        if i == 0:
            line += (f"   (time to first step {first:.2f} s; programs built {dev.stats['builds']}, "
                     f"loaded from disk {dev.stats['disk_hits']})")
        print(line, flush=True)
        t = _torch(args)
        if t is None:
            print("torch: not installed (pip install torch==2.13.0, or pass --torch-python)")
            return
        print(f"torch {t[1]} CPU: {t[0]:9.0f} samples/s   engine/torch = {rate / t[0]:.2f}", flush=True)


def _torch(args):
    if args.torch_python:
        out = subprocess.run([args.torch_python, os.path.join(os.path.dirname(__file__), "mlp_torch.py"),
                              "--steps", str(args.steps), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True).stdout
        d = json.loads(out.strip().splitlines()[-1])
        return d["samples_per_s"], d["torch"]
    if try_torch() is None:
        return None
    from bench.mlp_torch import torch_rate
    return torch_rate(args.steps, args.batch)


if __name__ == "__main__":
    main()
