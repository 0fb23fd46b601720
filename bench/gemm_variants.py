"""The GPU tiled GEMM's variants side by side with torch.matmul (cuBLAS fp32, TF32 off):
every variant of a fixed list, built, checked against float64 numpy and timed at each
size; TFLOP/s counts every kernel of the product (operand packing included), "gemm only"
the GEMM kernel alone.

    python -m bench.gemm_variants [--device nvidia] [--sizes 1024 2048 4096] [--budget-s 150]
                                  [--near-default] [--json FILE] [--fake-gpu]
    python -m bench.gemm_variants --device nvidia --mlp [--fills 2 1 0]

``--near-default`` times only the large class's default and its neighbours. ``--mlp``
times the 784-4096-4096-10 MLP's compiled training step at batch 1024 beside torch with
split-K as the lowering chooses it (``lowering.FILL`` 2) and with other FILL values (0 =
never split), the square GEMMs with the default variant at each FILL, and prints where one
step's device time goes, kernel by kernel. ``--fake-gpu`` runs the GPU template on a CPU
device (PoCL), to check the script itself.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import engine
from bench.common import header, try_torch
from engine import autotune, runtime, tune
from engine.profile import profile


def variants() -> list:
    """(label, TM, TN, knobs): the first version, the default, each knob changed alone,
    then other tiles and work per work-item."""
    base = dict(tune.GPU_VARIANTS["large"])
    out = [("first version (16x16 items, strided, scalar)", 128, 128, {})]
    cands = [base]
    for k, values in (("KB", (8, 32)), ("DBUF", (0,)), ("MAD", (1,)), ("LV", (1, 2)), ("VW", (1, 2)),
                      ("BLOCK", (1,)), ("PAD", (4,))):
        cands += [dict(base, **{k: x}) for x in values]
    for (TM, TN), works in (((128, 128), ((8, 4), (4, 8), (16, 8), (8, 16), (4, 4))),
                            ((128, 64), ((8, 4), (8, 8), (4, 4), (16, 4))),
                            ((64, 128), ((4, 8), (8, 8), (4, 4))),
                            ((64, 64), ((4, 4), (8, 4), (4, 8), (8, 8))),
                            ((128, 32), ((8, 2), (4, 4))), ((32, 128), ((2, 8), (4, 4)))):
        for WM, WN in works:
            cands.append(dict(base, TM=TM, TN=TN, WM=WM, WN=WN))
    cands += [dict(base, KB=8, MAD=1), dict(base, KB=8, DBUF=0), dict(base, TM=128, TN=128, WM=16, WN=8, KB=8),
              dict(base, TM=128, TN=128, WM=8, WN=16, KB=8), dict(base, TM=64, TN=64, WM=4, WN=4, KB=32),
              dict(base, TM=128, TN=64, WM=8, WN=4, KB=32), dict(base, BLOCK=1, LV=1)]
    seen = set()
    for v in cands:
        key = tuple(sorted(v.items()))
        if key in seen or tune.variant_problem(v):
            continue
        seen.add(key)
        out.append((autotune._label(v), v["TM"], v["TN"], {k: x for k, x in v.items() if k not in ("TM", "TN")}))
    return out


def near_default() -> list:
    """The large class's default and the variants one knob (or the work per item) away."""
    base = dict(tune.GPU_VARIANTS["large"])
    cands = [base] + [dict(base, **{k: x}) for k, xs in (("KB", (8,)), ("VW", (2,)), ("LV", (2,)), ("MAD", (1,)),
                                                          ("PAD", (4,)), ("BLOCK", (1,)), ("DBUF", (0,))) for x in xs]
    cands += [dict(base, WM=8, WN=16), dict(base, WM=8, WN=8), dict(base, TN=64, WM=16, WN=4),
              dict(base, TN=64, WM=8, WN=8), dict(base, TM=64, TN=64, WM=8, WN=8), dict(base, KB=8, VW=2)]
    out = [("first version (16x16 items, strided, scalar)", 128, 128, {})]
    for v in cands:
        if tune.variant_problem(v) is None:
            out.append((autotune._label(v), v["TM"], v["TN"], {k: x for k, x in v.items() if k not in ("TM", "TN")}))
    return out


def mlp_mode(dev, args):
    from bench.table import Peer, _batches, _mlp, mlp_rates
    from engine import lowering
    from engine.nn import functional as F
    peer = Peer(dev)
    sizes, batch = tuple(args.mlp_sizes), args.mlp_batch
    default_fill = lowering.FILL
    rng = np.random.default_rng(0)
    square = {}
    for n in args.sizes:
        an, bn = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        square[n] = (engine.tensor(an, device=dev), engine.tensor(bn, device=dev), an.astype(np.float64) @ bn)
    base = tune.GPU_VARIANTS["large"]
    knobs = {k: x for k, x in base.items() if k not in ("TM", "TN")}
    for fill in args.fills:
        lowering.FILL = fill
        cells = []
        for n in args.sizes:
            t, _, err, plan = time_variant(dev, base["TM"], base["TN"], knobs, n, *square[n], args.repeat)
            wrong = "" if err < 1e-4 else f" WRONG (max rel err {err:.1e})"
            cells.append(f"n={n} {t:.2f} TFLOP/s{wrong} ({plan.count('gemm_tiled')} GEMM, "
                         f"{plan.count('reduce')} reduce)")
        print(f"FILL={fill}: square GEMMs, default variant: " + "; ".join(cells), flush=True)
        ours, theirs = mlp_rates(dev, peer, sizes, batch, args.steps)
        r = f", torch {theirs / batch:.0f}, engine/torch {ours / theirs:.2f}" if theirs else ""
        print(f"FILL={fill}: MLP {'-'.join(map(str, sizes))} b{batch} compiled step: engine {ours / batch:.0f} steps/s{r}",
              flush=True)
    lowering.FILL = default_fill
    engine.manual_seed(0)
    model = _mlp(sizes, dev)
    opt = engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = engine.training_step(model, F.cross_entropy, opt, compiled=True)
    x, y = (engine.tensor(a, device=dev) for a in _batches(batch, sizes[0], 1)[0])
    for _ in range(3):
        step(x, y).item()
    with profile() as p:
        step(x, y).item()
    total = sum(k["time_ns"] or 0 for k in p.kernels)
    print(f"one step (FILL={default_fill}): {len(p.kernels)} kernels, {total / 1e3:.0f} us of device time")
    by_template: dict = {}
    for k in p.kernels:
        by_template[k["template"]] = by_template.get(k["template"], 0) + (k["time_ns"] or 0)
    print("  by template: " + ", ".join(f"{t} {ns / 1e3:.0f} us" for t, ns in sorted(by_template.items(),
                                                                                      key=lambda i: -i[1])))
    for k in sorted(p.kernels, key=lambda k: -(k["time_ns"] or 0))[:25]:
        d = k["params"]
        what = {x: d[x] for x in ("M", "N", "K", "batch", "TM", "TN", "WM", "WN", "a_packed", "shape", "in_shape",
                                  "reduce") if x in d}
        gf = f" {2 * d['M'] * d['N'] * d['K'] * d['batch'] / k['time_ns'] / 1e3:.1f} TFLOP/s" \
            if k["template"].startswith("gemm") and k["time_ns"] else ""
        print(f"  {(k['time_ns'] or 0) / 1e3:8.1f} us  {k['template']:12s} {k['global_size']} {what}{gf}")


def time_variant(dev, TM, TN, knobs, n, a, b, ref, repeat):
    """(TFLOP/s all kernels, TFLOP/s GEMM kernel, max relative error, the kernels run)."""
    with tune.override(TM, TN, variant=knobs):
        mm = engine.compile(lambda x, y: x @ y)
        out = mm(a, b).numpy()
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        totals, gemms = [], []
        for _ in range(repeat):
            with profile() as p:
                mm(a, b)
            totals.append(sum(k["time_ns"] for k in p.kernels))
            gemms.append(sum(k["time_ns"] for k in p.kernels if k["template"].startswith("gemm")))
    used = [k for k in p.kernels if k["template"] == "gemm_tiled"]
    if not used or any(u["params"].get(x) != y for u in used for x, y in knobs.items()) \
            or any((u["params"]["TM"], u["params"]["TN"]) != (TM, TN) for u in used):
        raise RuntimeError(f"the GEMM ran with {[u['params'] for u in used]}, not the variant asked for")
    flop = 2 * n ** 3
    plan = " ".join(f"{k['template']}{k['global_size']}" for k in p.kernels)
    return flop / np.median(totals) / 1e3, flop / np.median(gemms) / 1e3, err, plan


def torch_tflops(n, repeat):
    torch = try_torch()
    if torch is None or not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randn(n, n, device="cuda")
    y = torch.randn(n, n, device="cuda")
    x @ y
    torch.cuda.synchronize()
    ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeat):
        ev0.record()
        x @ y
        ev1.record()
        torch.cuda.synchronize()
        times.append(ev0.elapsed_time(ev1) / 1e3)
    return 2 * n ** 3 / float(np.median(times)) / 1e12


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting new variants after this long")
    ap.add_argument("--limit", type=int, default=None, help="only the first N variants")
    ap.add_argument("--json", default=None)
    ap.add_argument("--fake-gpu", action="store_true")
    ap.add_argument("--near-default", action="store_true")
    ap.add_argument("--mlp", action="store_true")
    ap.add_argument("--fills", type=int, nargs="+", default=[2, 1, 0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--mlp-sizes", type=int, nargs="+", default=[784, 4096, 4096, 10])
    ap.add_argument("--mlp-batch", type=int, default=1024)
    args = ap.parse_args(argv)
    dev = runtime.get_device(args.device)
    if args.fake_gpu:
        dev = runtime.Device(dev.cl_device, dev.index)
        dev.kind = "gpu"
    print(header(dev))
    if args.mlp:
        return mlp_mode(dev, args)
    peer = {n: torch_tflops(n, args.repeat) for n in args.sizes}
    print("torch.matmul fp32 (TF32 off) TFLOP/s: " + ", ".join(
        f"n={n}: {t:.2f}" if t else f"n={n}: -" for n, t in peer.items()), flush=True)
    rng = np.random.default_rng(0)
    data = {}
    for n in args.sizes:
        an = rng.standard_normal((n, n), dtype=np.float32)
        bn = rng.standard_normal((n, n), dtype=np.float32)
        data[n] = (engine.tensor(an, device=dev), engine.tensor(bn, device=dev),
                   an.astype(np.float64) @ bn.astype(np.float64))
    print("TFLOP/s with packing (ratio to torch) per size; 'gemm' = the GEMM kernel alone at the largest size")
    rows, start = [], time.monotonic()
    todo = (near_default() if args.near_default else variants())[:args.limit]
    for i, (label, TM, TN, knobs) in enumerate(todo):
        if args.budget_s is not None and time.monotonic() - start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: {len(todo) - i} variants not run")
            break
        row = {"label": label, "TM": TM, "TN": TN, "knobs": knobs, "sizes": {}}
        cells = []
        for n in args.sizes:
            try:
                t, g, err, plan = time_variant(dev, TM, TN, knobs, n, *data[n], args.repeat)
            except Exception as exc:
                row["sizes"][n] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                cells.append(f"n={n} FAILED {type(exc).__name__}")
                continue
            ok = err < 1e-4
            row["sizes"][n] = {"tflops": t, "gemm_tflops": g, "err": err, "ok": ok, "kernels": plan,
                               "ratio": t / peer[n] if peer[n] else None}
            r = f" ({t / peer[n]:.2f})" if peer[n] else ""
            cells.append(f"{t:6.2f}{r}{'' if ok else ' WRONG %.1e' % err}")
        big = row["sizes"].get(args.sizes[-1], {})
        gemm = f" gemm {big['gemm_tflops']:.2f}" if "gemm_tflops" in big else ""
        print(f"[{i + 1:2d}/{len(todo)} {time.monotonic() - start:4.0f}s] {label:58s} " + "  ".join(cells) + gemm,
              flush=True)
        rows.append(row)
        if i == 0:
            print("  kernels run: " + "; ".join(f"n={n}: {s.get('kernels')}" for n, s in row["sizes"].items()))
    ok_rows = [r for r in rows if all(s.get("ok") for s in r["sizes"].values()) and r["sizes"]]
    for n in args.sizes:
        top = sorted(ok_rows, key=lambda r: -r["sizes"][n]["tflops"])[:5]
        print(f"best at n={n}: " + "; ".join(f"{r['label']} {r['sizes'][n]['tflops']:.2f}" for r in top))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": header(dev), "torch_tflops": peer, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
