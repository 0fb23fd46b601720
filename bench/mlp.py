"""MLP training throughput: 784-512-512-10, batch 128, SGD momentum, the engine's compiled
step against PyTorch CPU (where installed), side by side in one run.

    python -m bench.mlp [--steps 50] [--device pocl]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import engine
from bench.common import header, try_torch
from engine.nn import functional as F

SIZES = (784, 512, 512, 10)


def engine_rate(dev, steps, batch):
    engine.manual_seed(0)
    layers = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        layers += [engine.nn.Linear(a, b, device=dev), engine.nn.ReLU()]
    model = engine.nn.Sequential(*layers[:-1])
    opt = engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    @engine.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

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


def torch_rate(torch, steps, batch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    loss.item()
    return steps * batch / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    print(header(dev))
    rate, first = engine_rate(dev, args.steps, args.batch)
    print(f"engine: {rate:9.0f} samples/s   (time to first step {first:.2f} s; "
          f"programs built {dev.stats['builds']}, loaded from disk {dev.stats['disk_hits']})")
    torch = try_torch()
    if torch is None:
        print("torch: not installed (pip install torch==2.13.0 to compare)")
        return
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    t = torch_rate(torch, args.steps, args.batch)
    print(f"torch CPU: {t:9.0f} samples/s   engine/torch = {rate / t:.2f}")


if __name__ == "__main__":
    main()
