"""What narrow gradient transport does to a loss curve: the same MLP, seed and batches
trained data-parallel through the real ring all-reduce with float32, bfloat16 and float16
transport, next to single-process training on the same global batches.

    .venv/bin/python -m bench.transport_curve [--ranks 2] [--steps 60] [--sizes 784 256 256 10] [--batch 256]

    .venv/bin/python -m bench.transport_curve --nodes [--ranks 2] [--steps 300] [--sizes 784 1024 1024 10] [--batch 512]

Each rank is a thread with its own RingLinks (ZeroMQ over 127.0.0.1, authenticated as in
production), its slice of the global batch, the numpy reference step (cluster/reference.py)
and the host Adam (cluster/optimizer.py); gradients are weighted by b_i/B and summed by
`cluster.allreduce(..., transport=...)`.  The loss of a step is the global-batch mean
(sum of w_i x the local means, taken in the harness, so the transport does not round the
reported number itself).  Reported: max over steps of |L(t) - L_float32(t)| / L_float32(t),
and the same for single-process training, which shows how far float32 summation order alone
moves the curve.

With --nodes, the same comparison through what a user runs: engine-node processes (one per
GPU, or every node on GPU 0 where there are fewer GPUs than ranks; CPU nodes otherwise)
trained by Cluster.fit with float32 and bfloat16 transport (GPU nodes on one host stream
both through shared memory and sum on their devices), beside the single-process engine
(a compiled Adam step) and PyTorch in float32 and float64 (where torch is installed; on
CUDA where there is one) on the same global batches, from the same initial weights.  Each
run is compared with PyTorch float64: over a long Adam run every float32 summation order
drifts from it, and PyTorch float32's row shows how far float32 alone goes.  CPU nodes
on one host sum gradients of more than 256 KB through shared memory in exact float32,
where a narrow transport does not apply (cluster/README.md): there both node curves are
float32's.
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import zmq

from bench.allreduce import machine
from bench.common import relu_mlp
from cluster import RingLinks, allreduce
from cluster.optimizer import HostOptimizer
from cluster.reference import ReferenceMLP, ReferenceProgram, epoch_order

SECRET = b"transport-curve-bench-secret"


def gaussian_classes(n: int, dim: int, classes: int, scale: float, seed: int):
    """Class centres `scale` apart per dimension under unit noise: hard enough that the loss
    keeps falling for the whole run instead of reaching ~0 in a few steps (relative loss
    differences of near-zero losses would say nothing)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)).astype(np.float32) * np.float32(scale)
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32), y


def batches(n_rows: int, B: int, steps: int, seed: int):
    per_epoch = n_rows // B
    for step in range(steps):
        epoch, i = divmod(step, per_epoch)
        yield epoch_order(n_rows, seed, epoch)[i * B:(i + 1) * B]


def train_single(sizes, spec, x, y, B, steps, seed) -> list[float]:
    model = ReferenceMLP(sizes, seed=seed)
    params = [np.array(v) for v in model.state_dict().values()]
    opt, prog, losses = HostOptimizer(spec, [p.shape for p in params]), ReferenceProgram(sizes, B), []
    for idx in batches(len(x), B, steps, seed):
        loss, grads = prog.run(params, x[idx], y[idx])
        opt.update(params, grads)
        losses.append(loss)
    return losses


def train_ring(sizes, spec, x, y, B, steps, seed, n, transport) -> tuple[list[float], float]:
    """Losses per step and the median all-reduce time; raises if ranks' weights differ."""
    ctx = zmq.Context(io_threads=2)
    links = [RingLinks(ctx, "tcp://127.0.0.1:*", SECRET, name=f"rank{r}", timeout_s=120) for r in range(n)]
    for r, lk in enumerate(links):
        lk.connect(1, r, [lk.endpoint for lk in links])
    shares = [B // n + (r < B % n) for r in range(n)]
    local_loss = np.zeros((steps, n))
    ar_times = [[] for _ in range(n)]
    finals, errors = [None] * n, []

    def rank(r):
        try:
            params = [np.array(v) for v in ReferenceMLP(sizes, seed=seed).state_dict().values()]
            opt, prog = HostOptimizer(spec, [p.shape for p in params]), ReferenceProgram(sizes, shares[r])
            off, w = sum(shares[:r]), np.float32(shares[r] / B)
            for step, idx in enumerate(batches(len(x), B, steps, seed)):
                part = idx[off:off + shares[r]]
                loss, grads = prog.run(params, x[part], y[part])
                local_loss[step, r] = w * loss
                flat = np.concatenate([g.reshape(-1) for g in grads])
                flat *= w
                t = time.perf_counter()
                allreduce(links[r], flat, step, transport=transport)
                ar_times[r].append(time.perf_counter() - t)
                grads, at = [], 0
                for p in params:
                    grads.append(flat[at:at + p.size].reshape(p.shape))
                    at += p.size
                opt.update(params, grads)
            finals[r] = params
        except Exception as e:   # stop the other ranks instead of letting them time out
            errors.append(e)
            for lk in links:
                lk.cancel.set()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lk in links:
        lk.close(linger_ms=0)
    ctx.term()
    if errors:
        raise errors[0]
    for other in finals[1:]:
        if not all(a.tobytes() == b.tobytes() for a, b in zip(finals[0], other)):
            raise AssertionError(f"{transport}: ranks ended with different weights")
    return list(local_loss.sum(axis=1)), float(np.median(ar_times[0]))


def train_nodes(sizes, spec, x, y, B, steps, seed, n) -> tuple[dict, dict]:
    """Loss curves and final weights, by run: engine nodes (Cluster.fit, float32 and
    bfloat16 transport), the single-process engine and, where torch is installed, PyTorch
    float32 and float64, all on the same batches from the same initial weights."""
    import engine
    from engine import nn
    from engine.nn import functional as F
    from bench.scaling import fit_on_nodes, gpu_indices

    engine.manual_seed(seed)
    init = {k: v.numpy().copy() for k, v in relu_mlp(nn, sizes).state_dict().items()}
    model = relu_mlp(nn, sizes)
    model.load_state_dict(init)
    opt = engine.optim.Adam(model.parameters(), lr=spec["lr"])
    step = engine.training_step(model, F.cross_entropy, opt)
    single = [float(step(engine.tensor(x[idx]), engine.tensor(y[idx])).item()) for idx in batches(len(x), B, steps, seed)]
    want = {k: v.numpy() for k, v in model.state_dict().items()}
    gpus = gpu_indices()
    devices = [gpus[i] if len(gpus) >= n else gpus[0] for i in range(n)] if gpus else [None] * n
    print(f"  nodes on devices {devices} ({'GPU' if gpus else 'default CPU device'})", flush=True)
    curves, finals = {"single process": single}, {"single process": want}
    try:
        import torch
    except ImportError:
        torch = None
    for dt in (("float32", "float64") if torch else ()):
        curves[f"PyTorch {dt}"], finals[f"PyTorch {dt}"] = train_torch(torch, getattr(torch, dt), sizes, init, spec,
                                                                      x, y, B, steps, seed)
    for t in ("float32", "bfloat16"):
        m = relu_mlp(nn, sizes)
        m.load_state_dict(init)
        res, _ = fit_on_nodes(devices, m, F.cross_entropy, spec, (x, y), B, steps, transport=t, seed=seed,
                              batch_multiple=B // n, rebalance_tolerance=1.0)
        curves[f"{t} nodes"], finals[f"{t} nodes"] = [float(h["loss"]) for h in res.history], res.params
        print(f"  {t} nodes: loss {curves[f'{t} nodes'][0]:.4f} -> {curves[f'{t} nodes'][-1]:.4f}", flush=True)
    return curves, finals


def train_torch(torch, dtype, sizes, init: dict, spec, x, y, B, steps, seed) -> tuple:
    """PyTorch's loss curve and final weights (float64 numpy) on the same batches from the
    same initial weights, on CUDA where there is one: how far float32 alone drifts from
    float64 over the run."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = relu_mlp(torch.nn, sizes).to(dev, dtype)
    model.load_state_dict({k: torch.tensor(v, dtype=dtype, device=dev) for k, v in init.items()})
    opt, losses = torch.optim.Adam(model.parameters(), lr=spec["lr"]), []
    for idx in batches(len(x), B, steps, seed):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x[idx], dtype=dtype, device=dev)),
                                                 torch.tensor(y[idx], device=dev))
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses, {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sizes", type=int, nargs="+", default=[784, 256, 256, 10])
    ap.add_argument("--scale", type=float, default=0.05, help="class centre spread (task difficulty)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=10240)
    ap.add_argument("--nodes", action="store_true",
                    help="engine-node processes through Cluster.fit, against the single-process engine")
    a = ap.parse_args(argv)
    spec = {"name": "adam", "lr": a.lr}
    x, y = gaussian_classes(a.rows, a.sizes[0], a.sizes[-1], a.scale, a.seed)
    print(f"transport curve ({machine()}); MLP {'-'.join(map(str, a.sizes))}, Adam lr {a.lr}, global batch "
          f"{a.batch}, {a.ranks} {'nodes' if a.nodes else 'ranks'}, {a.steps} steps, Gaussian classes "
          f"(scale {a.scale}, {len(x)} rows), seed {a.seed}", flush=True)
    if a.nodes:
        curves, finals = train_nodes(a.sizes, spec, x, y, a.batch, a.steps, a.seed, a.ranks)
        # Adam passes rounding differences of near-zero gradients on as whole steps of lr, so
        # over a long run any two float32 summation orders drift apart; PyTorch float64 (where
        # torch is installed) is the reference, and PyTorch float32's row shows how far
        # float32 alone drifts from it
        base = "PyTorch float64" if "PyTorch float64" in curves else "single process"
        ref, want = np.array(curves[base], np.float64), finals[base]
        lines = [f"| run | first loss | last loss | max rel diff vs {base}, steps 1-50 | all steps | first step over 1e-4 "
                 f"| weights vs {base} |", "|---|---|---|---|---|---|---|"]
        for name, c in curves.items():
            rel = np.abs(np.array(c, np.float64) - ref) / np.abs(ref)
            over = np.flatnonzero(rel > 1e-4)
            w = max(float(np.abs(np.float64(finals[name][k]) - np.float64(v)).max() / np.abs(np.float64(v)).max())
                    for k, v in want.items())
            lines.append(f"| {name} | {c[0]:.5f} | {c[-1]:.5f} | {rel[:50].max():.2e} | {rel.max():.2e} | "
                         f"{int(over[0]) + 1 if len(over) else '-'} | {w:.2e} |")
        print("\n" + "\n".join(lines))
        return
    curves, ar = {}, {}
    for t in ("float32", "bfloat16", "float16"):
        curves[t], ar[t] = train_ring(a.sizes, spec, x, y, a.batch, a.steps, a.seed, a.ranks, t)
        print(f"  {t}: loss {curves[t][0]:.4f} -> {curves[t][-1]:.4f}, median all-reduce {ar[t] * 1e3:.1f} ms", flush=True)
    curves["single process"] = train_single(a.sizes, spec, x, y, a.batch, a.steps, a.seed)
    ref = np.array(curves["float32"], np.float64)
    lines = ["| run | first loss | last loss | max rel diff vs float32 ring | at step | median all-reduce |",
             "|---|---|---|---|---|---|"]
    for name, c in curves.items():
        rel = np.abs(np.array(c, np.float64) - ref) / np.abs(ref)
        lines.append(f"| {name} | {c[0]:.5f} | {c[-1]:.5f} | {rel.max():.2e} | {int(rel.argmax()) + 1} | "
                     + (f"{ar[name] * 1e3:.1f} ms |" if name in ar else "- |"))
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
