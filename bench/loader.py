"""Data-loader throughput next to the training step rate it has to feed.

    ./dev bench loader [--rows 60000] [--batch 128] [--steps 40] [--notes bench/NOTES.md]

Writes an MNIST-shaped Parquet file (60000 x 784 float32 features, int64 label; random),
then measures, on the default engine device:
  1. loader samples/s yielding numpy batches (read + decode + shuffle + batch),
  2. loader samples/s yielding device tensors (the above + upload, in the prefetch thread),
  3. the engine's training step rate for the 784-512-512-10 MLP (batch 128, SGD momentum
     0.9, compiled step) on batches already on the device,
  4. the same training fed by the loader, to show the prefetch thread hides the loading.
The loader must deliver at least 5x the samples/s that training consumes. With --notes the
numbers are appended as a "## Data loader" section (with device, driver and commit).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from collections import OrderedDict

import numpy as np

import engine
from engine.data import ArrowDataset, DataLoader, write_parquet

FEATURES = 784


def make_file(path: str, rows: int, row_group_size: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    x = rng.random((rows, FEATURES), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    t = time.perf_counter()
    write_parquet(path, x, y, row_group_size=row_group_size)
    return time.perf_counter() - t


def loader_rate(loader: DataLoader, epochs: int = 2) -> float:
    """Samples/s over full epochs, each batch forced to exist (numpy or on the device)."""
    best = 0.0
    for _ in range(epochs):
        t, n = time.perf_counter(), 0
        last = None
        for x, y in loader:
            n += len(y) if isinstance(y, np.ndarray) else y.shape[0]
            last = x
        if last is not None and not isinstance(last, np.ndarray):
            last.numpy()[:1]                          # wait for the last upload
        best = max(best, n / (time.perf_counter() - t))
    return best


def build_mlp(device):
    nn = engine.nn
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(FEATURES, 512, device=device)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(512, 512, device=device)), ("relu2", nn.ReLU()),
        ("out", nn.Linear(512, 10, device=device))]))


def make_step(device):
    engine.manual_seed(0)
    model = build_mlp(device)
    opt = engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return engine.training_step(model, engine.nn.functional.cross_entropy, opt)


def step_rate(device, batch: int, steps: int) -> float:
    """Training steps/s on fixed device batches (no loading at all)."""
    step = make_step(device)
    rng = np.random.default_rng(1)
    x = engine.tensor(rng.random((batch, FEATURES), dtype=np.float32), device=device)
    y = engine.tensor(rng.integers(0, 10, batch), device=device)
    for _ in range(3):
        step(x, y).item()                              # trace, compile, warm up
    t = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    loss.item()
    return steps / (time.perf_counter() - t)


def fed_step_rate(device, loader: DataLoader, steps: int) -> float:
    """Training steps/s with every batch coming from the loader."""
    step = make_step(device)
    batches = iter(loader)
    for _ in range(3):
        step(*next(batches)).item()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step(*next(batches))
    loss.item()
    rate = steps / (time.perf_counter() - t)
    batches.close()
    return rate


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.loader", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--row-group-size", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps")
    ap.add_argument("--memory-budget", type=int, default=256, help="loader memory budget, MiB")
    ap.add_argument("--notes", help="append a '## Data loader' section with the numbers to this file")
    args = ap.parse_args(argv)

    device = engine.default_device()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mnist_shaped.parquet")
        write_s = make_file(path, args.rows, args.row_group_size)
        size_mb = os.path.getsize(path) / 1e6
        ds = ArrowDataset(path)
        common = dict(batch_size=args.batch, seed=0, drop_last=True, memory_budget=args.memory_budget << 20)
        host = loader_rate(DataLoader(ds, as_numpy=True, **common))
        dev = loader_rate(DataLoader(ds, device=device, **common))
        steps_s = step_rate(device, args.batch, args.steps)
        fed_s = fed_step_rate(device, DataLoader(ds, device=device, **common), args.steps)
    need = steps_s * args.batch
    rows = [
        ("file", f"{args.rows} x {FEATURES} float32 + int64 label, {size_mb:.0f} MB Parquet, "
                 f"row groups of {args.row_group_size} (written in {write_s:.2f} s)"),
        ("loader -> numpy", f"{host:,.0f} samples/s"),
        ("loader -> device tensors", f"{dev:,.0f} samples/s"),
        ("MLP 784-512-512-10 train step (batch {0}, SGD momentum, compiled)".format(args.batch),
         f"{steps_s:.1f} steps/s = {need:,.0f} samples/s"),
        ("same training fed by the loader", f"{fed_s:.1f} steps/s = {fed_s * args.batch:,.0f} samples/s"),
        ("loader (device) / training", f"{dev / need:.1f}x (required: >= 5x)"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"device: {device}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    ok = dev >= 5 * need
    print("OK: loader >= 5x training" if ok else "FAIL: loader < 5x training")
    if args.notes:
        with open(args.notes, "a") as f:
            f.write(f"\n## Data loader\n\n`./dev bench loader` ({time.strftime('%Y-%m-%d')}, commit {commit()}, "
                    f"{device.name} / driver {device.driver}, {os.cpu_count()} cores, "
                    f"Python {platform.python_version()}, memory budget {args.memory_budget} MiB)\n\n"
                    "| what | measured |\n|---|---|\n")
            f.writelines(f"| {k} | {v} |\n" for k, v in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
