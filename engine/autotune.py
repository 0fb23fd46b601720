"""``engine tune``: measure GEMM kernels on this device and remember the best in the
tuning database (engine/tune.py), so later runs on the same device and driver use them.

CPUs: a handful of register-block tiles over a small MLP's training shapes. GPUs: the
tiled GEMM's variant space (tune.variant_space) per shape class (tune.shape_class), each
variant checked against float64 numpy on random data before its time counts, timed as
the median of a few runs (operand packing included), within a time budget."""
from __future__ import annotations

import time

import numpy as np

from . import tune
from .jit import compile as jit_compile
from .profile import profile
from .tensor import tensor

__all__ = ["search", "search_variants", "CPU_CANDIDATES", "GPU_CANDIDATES", "SHAPES", "GPU_SHAPES"]

CPU_CANDIDATES = [(4, 32), (6, 32), (8, 16), (8, 32), (8, 48), (12, 16), (12, 32)]
GPU_CANDIDATES = [(64, 64), (64, 128), (128, 64), (128, 128)]
# the shapes of a training step of the 784-512-512-10 MLP at batch 128, and a square one
SHAPES = [(128, 512, 784), (784, 512, 128), (512, 512, 512)]
# (M, N, K) per GPU shape class: the 784-4096-4096-10 MLP's training step at batch 1024
# (forward, input gradients and weight gradients) and the small MLP's
GPU_SHAPES = [(1024, 4096, 784), (1024, 4096, 4096), (4096, 4096, 1024), (784, 4096, 1024), (1024, 4096, 10),
              (1024, 10, 4096), (4096, 10, 1024), (128, 512, 784), (128, 512, 512)]


def _time(device, M, N, K, repeat, batch=()):
    """Median device time (ns, every kernel of the product) of x @ y as the device's
    lowering plans it (under tune.override while searching), after checking its result
    against float64 numpy; raises AssertionError on a wrong product."""
    rng = np.random.default_rng(M * 7 + N * 3 + K)
    an = rng.standard_normal(tuple(batch) + (M, K), dtype=np.float32)
    bn = rng.standard_normal(tuple(batch) + (K, N), dtype=np.float32)
    a, b = tensor(an, device=device), tensor(bn, device=device)
    mm = jit_compile(lambda x, y: x @ y)
    out = mm(a, b).numpy()
    ref = an.astype(np.float64) @ bn.astype(np.float64)
    err = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)
    if not err < 1e-4:
        raise AssertionError(f"variant gave a wrong product for {M}x{N}x{K} (relative error {err:.2e})")
    times = []
    for _ in range(repeat):
        with profile() as p:
            mm(a, b)
        times.append(sum(k["time_ns"] for k in p.kernels))
    return float(np.median(times))


def search(device, candidates=None, shapes=None, repeat=3, progress=print) -> dict:
    """CPUs (and GPUs asked for plain tiles): time each (R, W) tile over ``shapes`` and save
    the fastest as the device's tile."""
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


def _label(v):
    return (f"{v['TM']}x{v['TN']} w{v['WM']}x{v['WN']} kb{v['KB']} lv{v['LV']} vw{v['VW']} "
            f"{'blk' if v['BLOCK'] else 'str'} pad{v['PAD']} {'dbuf' if v['DBUF'] else 'sbuf'} "
            f"{'mad' if v['MAD'] else 'mul'}")


def search_variants(device, shapes=None, candidates=None, budget_s=None, repeat=3, progress=print) -> dict:
    """GPUs: for each shape class of ``shapes`` (M, N, K), time that class's variants
    (tune.variant_space, or ``candidates`` for every class), most promising first, the
    classes taking turns, until ``budget_s`` seconds have passed; save the fastest correct
    one per class. A variant that fails to build or gives a wrong product is reported
    and skipped."""
    shapes = shapes or GPU_SHAPES
    classes: dict = {}
    for M, N, K in shapes:
        classes.setdefault(tune.shape_class(M, N, K), []).append((M, N, K))
    queues = {c: list(candidates) if candidates else tune.variant_space(c) for c in classes}
    start = time.monotonic()
    results, best = [], {}
    tried = {c: 0 for c in classes}
    for i in range(max(len(q) for q in queues.values())):
        for cls, cls_shapes in classes.items():
            if i >= len(queues[cls]):
                continue
            if budget_s is not None and time.monotonic() - start > budget_s and len(best) == len(classes):
                break
            v = queues[cls][i]
            knobs = {k: x for k, x in v.items() if k not in ("TM", "TN")}
            row = {"class": cls, "variant": dict(v)}
            try:
                with tune.override(v["TM"], v["TN"], variant=knobs):
                    ns = sum(_time(device, M, N, K, repeat) for M, N, K in cls_shapes)
            except Exception as exc:       # a build failure or a wrong product: not eligible
                row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                cell = f"FAILED ({row['error'][:80]})"
            else:
                row["ns"] = ns
                row["gflops"] = sum(2 * M * N * K for M, N, K in cls_shapes) / ns
                cell = f"{row['gflops'] / 1e3:6.2f} TFLOP/s"
                if cls not in best or ns < best[cls][1]:
                    best[cls] = (dict(v), ns)
            tried[cls] += 1
            results.append(row)
            if progress:
                progress(f"  [{time.monotonic() - start:5.0f} s] {cls:6s} #{i + 1}/{len(queues[cls])} {_label(v)}: {cell}")
        else:
            continue
        break
    if progress:
        progress("  tried " + ", ".join(f"{c}: {n} of {len(queues[c])}" for c, n in tried.items()))
    if not best:
        raise RuntimeError("no GEMM variant built and computed the right product on this device")
    path = tune.save_variants(device, {c: v for c, (v, _) in best.items()}, results)
    return {"best": {c: v for c, (v, _) in best.items()}, "results": results, "path": path}
