"""The CPU GEMMs of one compiled MLP 784-512-512-10 training step (batch 128), each
timed beside numpy (OpenBLAS) in one run: forward x @ w.T, input gradient g @ w, weight
gradient g.T @ x (K = 128), as the engine lowers them ('engine us': every kernel of the
product, its operand copies included; 'gemm us': the GEMM kernel alone), and a square
n=1024. Both sides are the best of ``--repeat`` runs.

    python -m bench.gemm_cpu [--repeat 5] [--device pocl] [--step]

``--step`` also profiles one compiled training step of that MLP (SGD momentum, cross
entropy): its device time (best of ``--repeat``) and its slowest kernels.
"""
from __future__ import annotations

import argparse

import numpy as np

import engine
from bench.common import best_of, header

# (label, A shape, B shape, transpose A, transpose B): the products as an engine.nn.Linear
# step forms them (weights [out, in], like PyTorch's): forward x @ w.T, input gradient
# g @ w, weight gradient g.T @ x
SHAPES = [
    ("fwd 128x784 @ (512x784)^T", (128, 784), (512, 784), False, True),
    ("fwd 128x512 @ (512x512)^T", (128, 512), (512, 512), False, True),
    ("fwd 128x512 @ (10x512)^T", (128, 512), (10, 512), False, True),
    ("dX 128x512 @ 512x512", (128, 512), (512, 512), False, False),
    ("dX 128x10 @ 10x512", (128, 10), (10, 512), False, False),
    ("dW (128x512)^T @ 128x784", (128, 512), (128, 784), True, False),
    ("dW (128x512)^T @ 128x512", (128, 512), (128, 512), True, False),
    ("dW (128x10)^T @ 128x512", (128, 10), (128, 512), True, False),
    ("square 1024", (1024, 1024), (1024, 1024), False, False),
]


def _op(ta, tb):
    def f(x, y):
        return (x.T if ta else x) @ (y.T if tb else y)
    return f


def engine_time(ashape, bshape, ta, tb, device, repeat):
    rng = np.random.default_rng(sum(ashape) + 7 * sum(bshape))
    an = rng.standard_normal(ashape, dtype=np.float32)
    bn = rng.standard_normal(bshape, dtype=np.float32)
    a, b = engine.tensor(an, device=device), engine.tensor(bn, device=device)
    mm = engine.compile(_op(ta, tb))
    out = mm(a, b).numpy()
    ref = _op(ta, tb)(an.astype(np.float64), bn.astype(np.float64))
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    totals, gemms, kernels = [], [], None
    for _ in range(repeat):
        with engine.profile() as p:
            mm(a, b)
        totals.append(sum(k["time_ns"] for k in p.kernels) * 1e-9)
        gemms.append(sum(k["time_ns"] for k in p.kernels if k["template"].startswith("gemm")) * 1e-9)
        kernels = p.kernels
    params = next((k["params"] for k in kernels if k["template"].startswith("gemm")), {})
    return min(totals), min(gemms), err, params, len(kernels)


def step_profile(device, repeat, top=12):
    """(device ns of the fastest of ``repeat`` compiled MLP steps, its kernels)."""
    from bench.mlp import mlp_step
    step = mlp_step(device)
    rng = np.random.default_rng(0)
    x = engine.tensor(rng.standard_normal((128, 784), dtype=np.float32), device=device)
    y = engine.tensor(rng.integers(0, 10, 128), device=device)
    for _ in range(3):
        step(x, y).item()
    best = None
    for _ in range(repeat):
        with engine.profile() as p:
            step(x, y).item()
        total = sum(k["time_ns"] for k in p.kernels)
        if best is None or total < best[0]:
            best = (total, list(p.kernels))
    return best


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default=None, help="substring of the labels to run")
    ap.add_argument("--step", action="store_true", help="also profile one compiled MLP training step")
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    print(header(dev))
    print(f"{'product':28s} {'engine us':>10} {'gemm us':>9} {'numpy us':>9} {'GFLOP/s':>8} {'numpy':>7} "
          f"{'eng/np':>7} {'kern':>4}  err      params")
    tot_e = tot_n = 0.0
    for label, ashape, bshape, ta, tb in SHAPES:
        if args.only and args.only not in label:
            continue
        t, tg, err, params, nk = engine_time(ashape, bshape, ta, tb, dev, args.repeat)
        rng = np.random.default_rng(1)
        an = rng.standard_normal(ashape, dtype=np.float32)
        bn = rng.standard_normal(bshape, dtype=np.float32)
        tn = best_of(lambda: _op(ta, tb)(an, bn), repeat=args.repeat)
        M = ashape[1] if ta else ashape[0]
        K = ashape[0] if ta else ashape[1]
        N = bshape[0] if tb else bshape[1]
        fl = 2 * M * N * K
        if "square" not in label:
            tot_e, tot_n = tot_e + t, tot_n + tn
        p = {k: params[k] for k in ("R", "W", "VW", "a_packed", "TM", "TN") if k in params}
        print(f"{label:28s} {t * 1e6:10.0f} {tg * 1e6:9.0f} {tn * 1e6:9.0f} {fl / t / 1e9:8.1f} {fl / tn / 1e9:7.1f} "
              f"{tn / t:7.2f} {nk:4d}  {err:.1e}  {p}", flush=True)
    if tot_e:
        print(f"{'MLP step GEMMs, sum':28s} {tot_e * 1e6:10.0f} {'':9s} {tot_n * 1e6:9.0f} {'':8s} {'':7s} {tot_n / tot_e:7.2f}")
    if args.step:
        total, kernels = step_profile(dev, args.repeat)
        print(f"\ncompiled MLP step: {total / 1e3:.0f} us device time in {len(kernels)} kernels; the slowest:")
        for k in sorted(kernels, key=lambda k: -k["time_ns"])[:12]:
            d = k["params"]
            shape = "x".join(str(d[x]) for x in ("M", "N", "K") if x in d) or str(d.get("shape", ""))
            print(f"  {k['time_ns'] / 1e3:8.0f} us  {k['template']:12s} {shape:14s} {','.join(k['fused_ops'][:6])}")


if __name__ == "__main__":
    main()
