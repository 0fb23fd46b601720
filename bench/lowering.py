"""Split-K on and off for the skinny contractions issue 10 names, in one run, on one device.

    python -m bench.lowering [--device pocl|nvidia|INDEX] [--batch B] [--repeat 5]

Rows: the conv 3x3 64->64, 32x32 forward + backward (its weight gradient is cols^T
[576, B*1024] @ dout [B*1024, 64]) and the 1024 x 10 logits layer of a wide MLP (forward
and backward, K = 4096), each a compiled step timed (synchronised, best of ``--repeat``)
with the lowering as it chooses and with split-K switched off (``lowering.FILL = 0``),
alternating; PyTorch on the same hardware as the peer. Each row also prints the slices S
the lowering chose for each GEMM of the step.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import engine
from bench.common import header, try_torch
from engine import lowering


def _gemms(loss_fn, x) -> list:
    """(M, N, K, batch) of every GEMM the step's forward + backward lowers to; a split-K
    GEMM shows its slices as the batch and its slice length as K."""
    ex = engine.explain(loss_fn, x, backward=True)
    return [(k.display["M"], k.display["N"], k.display["K"], k.display["batch"]) for k in ex.kernels
            if k.template.startswith("gemm")]


def _time(step, args, dev, x):
    dev.synchronize()
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        step(x)
        dev.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _conv(dev, args):
    b = args.batch or (64 if dev.kind == "gpu" else 8)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((b, 64, 32, 32), dtype=np.float32)
    conv = engine.nn.Conv2d(64, 64, 3, padding=1, device=dev)
    x = engine.tensor(x_np, device=dev)

    def loss_fn(x):
        out = conv(x)
        return (out * out).mean()

    def torch_fn(t, where):
        tc = t.nn.Conv2d(64, 64, 3, padding=1).to(where)
        tx = t.from_numpy(x_np).to(where)

        def f():
            tc.zero_grad()
            out = tc(tx)
            (out * out).mean().backward()
        return f
    return f"conv 3x3 64->64 32x32 b{b} fwd+bwd", loss_fn, x, conv.parameters(), torch_fn


def _logits(dev, args):
    b = 1024
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((b, 4096), dtype=np.float32)
    lin = engine.nn.Linear(4096, 10, device=dev)
    x = engine.tensor(x_np, device=dev)

    def loss_fn(x):
        return (lin(x) ** 2).mean()

    def torch_fn(t, where):
        tl = t.nn.Linear(4096, 10).to(where)
        tx = t.from_numpy(x_np).to(where)

        def f():
            tl.zero_grad()
            (tl(tx) ** 2).mean().backward()
        return f
    return "logits 1024x4096 @ 4096x10 fwd+bwd", loss_fn, x, lin.parameters(), torch_fn


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    t = try_torch()
    where = "cuda" if t is not None and dev.kind == "gpu" and t.cuda.is_available() else "cpu"
    if t is not None and where == "cuda":
        t.backends.cuda.matmul.allow_tf32 = False
        t.backends.cudnn.allow_tf32 = False
    print(header(dev))
    print(f"compute units {lowering.compute_units(dev)}; peer torch on {where}")
    print("| what | split-K as chosen | split-K off | off/on time | torch | engine speed / torch |")
    print("|---|---|---|---|---|---|")
    fill = lowering.FILL
    for make in (_conv, _logits):
        what, loss_fn, x, params, torch_fn = make(dev, args)

        def fwd_bwd(x):
            for p in params:
                p.grad = None
            loss_fn(x).backward()
            return [p.grad for p in params]
        steps, gemms = {}, {}
        for name, f in (("on", fill), ("off", 0)):
            lowering.FILL = f
            gemms[name] = _gemms(loss_fn, x)
            steps[name] = engine.compile(fwd_bwd)
            steps[name](x)[0].numpy()            # trace and build under this lowering
        lowering.FILL = fill
        best = {"on": float("inf"), "off": float("inf")}
        for _ in range(2):                       # alternate, so both see the same machine load
            for name in ("on", "off"):
                best[name] = min(best[name], _time(steps[name], args, dev, x))
        theirs = None
        if t is not None:
            tf = torch_fn(t, where)
            tf()
            theirs = float("inf")
            for _ in range(args.repeat):
                if where == "cuda":
                    t.cuda.synchronize()
                t0 = time.perf_counter()
                tf()
                if where == "cuda":
                    t.cuda.synchronize()
                theirs = min(theirs, time.perf_counter() - t0)
        split = [g for g in gemms["on"] if g not in gemms["off"]]
        print(f"| {what} | {best['on'] * 1e3:.2f} ms | {best['off'] * 1e3:.2f} ms | {best['off'] / best['on']:.2f} | "
              f"{theirs * 1e3 if theirs else float('nan'):.2f} ms | {theirs / best['on'] if theirs else float('nan'):.2f} |",
              flush=True)
        print(f"|   GEMMs (M, N, K, batch) split: {split or 'none'} | | | | | |", flush=True)

if __name__ == "__main__":
    main()
