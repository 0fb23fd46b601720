"""``engine tune``: measure GEMM tile shapes on this device and remember the best in the
tuning database (engine/tune.py), so later runs on the same device and driver use it."""
from __future__ import annotations

import numpy as np

from . import tune
from .jit import compile as jit_compile
from .profile import profile
from .tensor import tensor

__all__ = ["search", "CPU_CANDIDATES", "GPU_CANDIDATES", "SHAPES"]

CPU_CANDIDATES = [(4, 32), (6, 32), (8, 16), (8, 32), (8, 48), (12, 16), (12, 32)]
GPU_CANDIDATES = [(64, 64), (64, 128), (128, 64), (128, 128)]
# the shapes of a training step of the 784-512-512-10 MLP at batch 128, and a square one
SHAPES = [(128, 512, 784), (784, 512, 128), (512, 512, 512)]


def _time(device, M, N, K, repeat):
    rng = np.random.default_rng(0)
    a = tensor(rng.standard_normal((M, K), dtype=np.float32), device=device)
    b = tensor(rng.standard_normal((K, N), dtype=np.float32), device=device)
    mm = jit_compile(lambda x, y: x @ y)
    out = mm(a, b).numpy()
    err = np.abs(out - a.numpy() @ b.numpy()).max() / max(np.abs(out).max(), 1e-30)
    if not err < 1e-4:
        raise AssertionError(f"tile gave a wrong product (relative error {err:.2e})")
    best = float("inf")
    for _ in range(repeat):
        with profile() as p:
            mm(a, b)
        best = min(best, sum(k["time_ns"] for k in p.kernels))
    return best


def search(device, candidates=None, shapes=None, repeat=3, progress=print) -> dict:
    candidates = candidates or (GPU_CANDIDATES if device.kind == "gpu" else CPU_CANDIDATES)
    shapes = shapes or SHAPES
    results = []
    for R, W in candidates:
        with tune.override(R, W):
            total = sum(_time(device, M, N, K, repeat) for M, N, K in shapes)
        flops = sum(2 * M * N * K for M, N, K in shapes)
        results.append({"R": R, "W": W, "ns": total, "gflops": flops / total})
        if progress:
            progress(f"  tile {R:3d} x {W:3d}: {flops / total:8.1f} GFLOP/s over {len(shapes)} shapes")
    best = min(results, key=lambda r: r["ns"])
    path = tune.save_best(device, {"R": best["R"], "W": best["W"]}, results)
    return {"best": best, "results": results, "path": path}
