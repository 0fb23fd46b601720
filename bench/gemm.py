"""GEMM, float32: the engine's generated kernel against numpy (OpenBLAS) and, where
installed, PyTorch (CPU, or cuBLAS on a CUDA machine), side by side in one run.

    python -m bench.gemm [--sizes 512 1024 2048] [--device pocl|nvidia|INDEX]
"""
from __future__ import annotations

import argparse

import numpy as np

import engine
from bench.common import best_of, header, try_torch


def engine_gflops(n, device, repeat):
    rng = np.random.default_rng(0)
    a = engine.tensor(rng.standard_normal((n, n), dtype=np.float32), device=device)
    b = engine.tensor(rng.standard_normal((n, n), dtype=np.float32), device=device)
    mm = engine.compile(lambda x, y: x @ y)   # replays the one GEMM launch
    c = mm(a, b).numpy()     # warm-up: builds the kernel, checks the result
    ref = a.numpy().astype(np.float64) @ b.numpy().astype(np.float64)
    err = float(np.abs(c - ref).max() / np.abs(ref).max())
    times, totals = [], []
    for _ in range(repeat):
        with engine.profile() as p:
            mm(a, b)
        gemm = [k for k in p.kernels if k["template"].startswith("gemm")][-1]
        times.append(gemm["time_ns"] * 1e-9)
        totals.append(sum(k["time_ns"] for k in p.kernels) * 1e-9)   # packing kernels included
    return 2 * n ** 3 / min(totals) / 1e9, 2 * n ** 3 / min(times) / 1e9, err, gemm["params"]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    torch = try_torch()
    cuda = torch is not None and torch.cuda.is_available() and dev.kind == "gpu"
    print(header(dev))
    peer = "torch cuBLAS (TF32 off)" if cuda else ("torch CPU" if torch else "torch (not installed)")
    print("engine GFLOP/s counts every kernel of the matmul (operand packing included); 'gemm only' the GEMM kernel")
    print(f"{'n':>6} {'engine GFLOP/s':>15} {'gemm only':>10} {'numpy GFLOP/s':>14} {'engine/numpy':>13} {peer + ' GFLOP/s':>28} {'engine/torch':>13}  max rel err  params")
    for n in args.sizes:
        g, g_kernel, err, params = engine_gflops(n, dev, args.repeat)
        a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        t_np = best_of(lambda: a @ a, repeat=args.repeat)
        g_np = 2 * n ** 3 / t_np / 1e9
        g_t = None
        if torch is not None:
            if cuda:
                torch.backends.cuda.matmul.allow_tf32 = False
                x = torch.randn(n, n, device="cuda")
                x @ x
                torch.cuda.synchronize()
                ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                best = float("inf")
                for _ in range(args.repeat):
                    ev0.record()
                    x @ x
                    ev1.record()
                    torch.cuda.synchronize()
                    best = min(best, ev0.elapsed_time(ev1) / 1e3)
                g_t = 2 * n ** 3 / best / 1e9
            else:
                x = torch.from_numpy(a)
                g_t = 2 * n ** 3 / best_of(lambda: x @ x, repeat=args.repeat) / 1e9
        ts = f"{g_t:28.1f} {g / g_t:13.2f}" if g_t else f"{'-':>28} {'-':>13}"
        print(f"{n:6d} {g:15.1f} {g_kernel:10.1f} {g_np:14.1f} {g / g_np:13.2f} {ts}  {err:.1e}  tile {params.get('R', params.get('TM'))}x{params.get('W', params.get('TN'))}", flush=True)


if __name__ == "__main__":
    main()
