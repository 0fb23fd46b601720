"""Reductions against torch, and the reduction plans side by side (engine/reduce_plan.py).

    python -m bench.reduce [--device pocl|nvidia|INDEX] [--repeat 5] [--sweep]

Each case reads one float32 array once; GB/s is bytes read / time: the engine's device
time of all its kernels (profiler) against torch's synchronised wall time (10 calls per
sync), on the same device kind (CUDA with a GPU, else the CPU). ``--sweep`` adds forced
plans (parts, work-group size, unroll) of the same cases, so a device's defaults can be
chosen from one run.
"""
from __future__ import annotations

import argparse

import numpy as np

import engine
from bench.common import header
from bench.table import Peer
from engine import realize, reduce_plan
from engine.plan_cache import PlanCache


def engine_gbs(x, fn, repeat, **forced):
    realize._plans = PlanCache()       # plans are remembered by graph structure, not by the forcing
    with reduce_plan.force(**forced):
        step = engine.compile(fn)
        got = step(x).numpy()
    best = float("inf")
    for _ in range(repeat):
        with engine.profile() as p:
            step(x)
        best = min(best, sum(k["time_ns"] for k in p.kernels) * 1e-9)
    templates = "+".join(k["template"].replace("reduce_group", "group").replace("reduce", "plain") for k in p.kernels)
    return x.numel() * 4 / best / 1e9, got, templates


def cases(gpu):
    if gpu:
        return [("sum 2^26", (1 << 26,), lambda v: v.sum(), None),
                ("max 2^26", (1 << 26,), lambda v: v.amax(), None),
                ("rows [4096, 4096].sum(1)", (4096, 4096), lambda v: v.sum(1), 1),
                ("columns [65536, 512].sum(0)", (65536, 512), lambda v: v.sum(0), 0),
                ("columns [2^20, 16].sum(0)", (1 << 20, 16), lambda v: v.sum(0), 0)]
    return [("sum 2^24", (1 << 24,), lambda v: v.sum(), None),
            ("max 2^24", (1 << 24,), lambda v: v.amax(), None),
            ("rows [1024, 4096].sum(1)", (1024, 4096), lambda v: v.sum(1), 1),
            ("columns [16384, 512].sum(0)", (16384, 512), lambda v: v.sum(0), 0),
            ("columns [2^18, 16].sum(0)", (1 << 18, 16), lambda v: v.sum(0), 0)]


def sweeps(name, dev):
    units = dev.cl_device.max_compute_units
    if name.startswith("sum"):
        n = 1 << (26 if dev.kind == "gpu" else 24)
        out = [{"group": 0, "parts": n // 1024, "unroll": 1}]       # the plan before reduce_plan
        for per_cu in (4, 8, 16, 32):
            out.append({"parts": units * per_cu})
        for g, u in ((128, 4), (512, 4), (256, 1), (256, 8), (256, 16)):
            out.append({"group": g, "unroll": u})
        return out + [{"group": 0, "unroll": 16}, {"group": 0, "unroll": 4}]
    if name.startswith("rows"):
        return [{"group": 0}, {"group": 0, "unroll": 1}, {"group": 128}, {"unroll": 8}]
    if name.startswith("columns"):
        return [{"parts": 1}, {"parts": units * 4}, {"unroll": 1}, {"unroll": 8}]
    return []


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    peer = Peer(dev)
    print(header(dev))
    print(f"compute units {dev.cl_device.max_compute_units}; peer: torch "
          f"{peer.torch.__version__ if peer.torch else '(not installed)'} on {peer.where}")
    print("| case | plan | kernels | engine GB/s | torch GB/s | engine/torch |\n|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, shape, fn, axis in cases(dev.kind == "gpu"):
        x_np = rng.standard_normal(shape, dtype=np.float32)
        x = engine.tensor(x_np, device=dev)
        ref = x_np.astype(np.float64).max(axis) if "max" in name else x_np.astype(np.float64).sum(axis)
        theirs = None
        if peer.torch is not None:
            tx = peer.torch.from_numpy(x_np).to(peer.where)
            tfn = (lambda: tx.amax()) if "max" in name else (lambda: tx.sum() if axis is None else tx.sum(axis))
            theirs = x_np.nbytes / peer.time(tfn, args.repeat, 10) / 1e9
        for forced in [{}] + (sweeps(name, dev) if args.sweep else []):
            try:
                ours, got, templates = engine_gbs(x, fn, args.repeat, **forced)
            except Exception as e:     # one plan failing must not hide the others
                print(f"| {name} | {forced or 'default'} | failed: {type(e).__name__}: {str(e)[:160]} | | | |",
                      flush=True)
                continue
            err = float(np.max(np.abs(got - ref)) / (np.abs(x_np).sum() / np.sqrt(x_np.size) + 1e-30))
            ok = "" if err < 1e-3 else f" WRONG (err {err:.2g})"
            ratio = f"{ours / theirs:.2f}" if theirs else "-"
            print(f"| {name} | {forced or 'default'}{ok} | {templates} | {ours:,.1f} | "
                  f"{'-' if theirs is None else f'{theirs:,.1f}'} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
