"""The speed table of issue 10, every row side by side with its peer in one run, as ratios.

    python -m bench.table [--device pocl|nvidia|INDEX] [--rows mlp,plain,cold,gemm,conv,sum,bigmlp,chain,curve]
                          [--repeat 3]

Peers: PyTorch on the same hardware (CPU, or CUDA with TF32 off on a GPU), numpy/OpenBLAS
for GEMM on a CPU, a copy kernel's bandwidth for the fused elementwise chain. Engine times
are wall times of compiled steps (synchronised) or device times from the profiler, as each
row says; engine and peer alternate ``--repeat`` times and the best of each is kept (the
MLP rows: the medians of their interleaved rounds, with the load average beside them).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

import engine
from bench.common import best_of, header, relu_mlp, try_torch
from engine.nn import functional as F

CPU_ROWS = "mlp,plain,cold,gemm,conv,sum,chain,curve"
GPU_ROWS = "mlp,plain,gemm,conv,sum,bigmlp,chain,curve"


class Peer:
    """PyTorch on the hardware the engine's device is: CUDA for a GPU, else the CPU."""

    def __init__(self, dev):
        self.torch = try_torch()
        self.cuda = self.torch is not None and dev.kind == "gpu" and self.torch.cuda.is_available()
        self.where = "cuda" if self.cuda else "cpu"
        if self.cuda:
            self.torch.backends.cuda.matmul.allow_tf32 = False
            self.torch.backends.cudnn.allow_tf32 = False

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def time(self, fn, repeat=5, number=1):
        def run():
            fn()
            self.sync()
        return best_of(run, repeat, number)


def _mlp(sizes, dev):
    return relu_mlp(engine.nn, sizes, device=dev)


def _torch_mlp(peer, model):
    t = peer.torch
    layers = []
    for m in model:
        if isinstance(m, engine.nn.Linear):
            lin = t.nn.Linear(m.weight.shape[1], m.weight.shape[0])
            with t.no_grad():
                lin.weight.copy_(t.from_numpy(m.weight.numpy()))
                lin.bias.copy_(t.from_numpy(m.bias.numpy()))
            layers.append(lin)
        else:
            layers.append(t.nn.ReLU())
    return t.nn.Sequential(*layers).to(peer.where)


def _batches(batch, width, n=4):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((batch, width), dtype=np.float32), rng.integers(0, 10, batch)) for _ in range(n)]


def mlp_rates(dev, peer, sizes, batch, steps, compiled=True, rounds=1):
    """Samples/s of SGD-momentum training, engine vs torch, same initial weights and data:
    the medians of ``rounds`` rounds of ``steps`` steps, engine and torch alternating
    round by round so both see the same machine load (on a CPU, torch's rate in a round
    is the faster of its default threads and one thread)."""
    engine.manual_seed(0)
    model = _mlp(sizes, dev)
    opt = engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = engine.training_step(model, F.cross_entropy, opt, compiled=compiled)
    data = _batches(batch, sizes[0])
    xs = [(engine.tensor(x, device=dev), engine.tensor(y, device=dev)) for x, y in data]
    tstep = txs = None
    if peer.torch is not None:
        t = peer.torch
        tm = _torch_mlp(peer, model)
        topt = t.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
        txs = [(t.from_numpy(x).to(peer.where), t.from_numpy(y).to(peer.where)) for x, y in data]

        def tstep(x, y):
            topt.zero_grad()
            loss = t.nn.functional.cross_entropy(tm(x), y)
            loss.backward()
            topt.step()
            return loss
        for x, y in txs[:3]:
            tstep(x, y)
    for x, y in xs[:3]:
        step(x, y).item()
    dev.synchronize()
    ours, theirs = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(steps):
            loss = step(*xs[i % len(xs)])
        loss.item()
        ours.append(steps * batch / (time.perf_counter() - t0))
        if tstep is None:
            continue
        # on a CPU shared with other work, torch's OpenMP threads can collapse (two threads
        # on two busy cores: ~200 ms a step where one thread takes ~7), so the peer is the
        # faster of its default thread count and one thread, each round
        rates = []
        for threads in ([None] if peer.cuda else [None, 1]):
            default = peer.torch.get_num_threads()
            if threads:
                peer.torch.set_num_threads(threads)
            try:
                peer.sync()
                t0 = time.perf_counter()
                for i in range(steps):
                    tstep(*txs[i % len(txs)])
                peer.sync()
                rates.append(steps * batch / (time.perf_counter() - t0))
            finally:
                peer.torch.set_num_threads(default)
        theirs.append(max(rates))
    mlp_rates.round_ratios = [a / b for a, b in zip(ours, theirs)]
    return float(np.median(ours)), (float(np.median(theirs)) if theirs else None)


def _load() -> str:
    """The load average, and each round's engine/torch ratio (the two ran back to back, so
    under a changing load these say more than the ratio of the medians)."""
    load = f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load ?"
    rounds = getattr(mlp_rates, "round_ratios", [])
    return load + (f"; per-round ratios {' '.join(f'{r:.2f}' for r in rounds)}" if rounds else "")


def row_mlp(dev, peer, args):
    ours, theirs = mlp_rates(dev, peer, (784, 512, 512, 10), 128, args.steps, rounds=args.repeat)
    return (f"MLP 784-512-512-10 b128, compiled step (medians of {args.repeat} interleaved rounds, {_load()})",
            ours, theirs, "samples/s")


def row_plain(dev, peer, args):
    ours, theirs = mlp_rates(dev, peer, (784, 512, 512, 10), 128, max(args.steps // 2, 5), compiled=False,
                             rounds=args.repeat)
    return f"same, plain (uncompiled) loop (medians of {args.repeat} rounds, {_load()})", ours, theirs, "samples/s"


_COLD = """
import time, numpy as np, engine
from engine.nn import functional as F
dev = engine.runtime.get_device({sel!r})
engine.manual_seed(0)
t0 = time.perf_counter()
layers = []
for a, b in zip((784, 512, 512), (512, 512, 10)):
    layers += [engine.nn.Linear(a, b, device=dev), engine.nn.ReLU()]
model = engine.nn.Sequential(*layers[:-1])
opt = engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
step = engine.training_step(model, F.cross_entropy, opt)
rng = np.random.default_rng(0)
x = engine.tensor(rng.standard_normal((128, 784), dtype=np.float32), device=dev)
y = engine.tensor(rng.integers(0, 10, 128), device=dev)
step(x, y).item()
print(time.perf_counter() - t0, dev.stats["builds"], dev.stats.get("programs", 0))
"""


def row_cold(dev, peer, args):
    """Time to the first step in a fresh process with empty program caches (and PoCL's):
    the median of ``--repeat`` rounds, engine and torch alternating, a new process each."""
    import statistics
    import tempfile
    torch_code = ("import time, torch; t0 = time.perf_counter(); m = torch.nn.Sequential(torch.nn.Linear(784, 512), "
                  "torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)); "
                  "o = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9); x = torch.randn(128, 784); "
                  "y = torch.randint(0, 10, (128,)); l = torch.nn.functional.cross_entropy(m(x), y); l.backward(); "
                  "o.step(); l.item(); print(time.perf_counter() - t0)")
    ours, theirs = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, ENGINE_CACHE_DIR=os.path.join(tmp, "engine"),
                       POCL_CACHE_DIR=os.path.join(tmp, "pocl"))
            out = subprocess.run([sys.executable, "-c", _COLD.format(sel=str(dev.index))], env=env,
                                 capture_output=True, text=True, check=True).stdout.split()
        ours.append(float(out[0]))
        if peer.torch is not None:
            theirs.append(float(subprocess.run([sys.executable, "-c", torch_code], capture_output=True, text=True,
                                               check=True).stdout.split()[0]))
    rounds = " ".join(f"{t:.2f}" for t in ours)
    # lower is better: report rates (1/s) so the ratio reads like the others
    # kernels compiled, and how many programs (one clBuildProgram each, in parallel build
    # children) held the grouped ones (engine/program_cache.py, prebuild); bench.cold_start
    # compares ENGINE_BUILD_WORKERS settings and an older checkout side by side
    return (f"first step, fresh process, empty caches ({out[1]} kernels built, {out[2]} grouped programs; "
            f"median of {len(ours)} rounds, engine s: {rounds}, load {os.getloadavg()[0]:.1f})",
            1 / statistics.median(ours), (1 / statistics.median(theirs) if theirs else None),
            "1/s (inverse seconds)")


def row_gemm(dev, peer, args):
    n = 4096 if dev.kind == "gpu" else 1024
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    a = engine.tensor(a_np, device=dev)
    mm = engine.compile(lambda x: x @ x)
    mm(a).numpy()
    best = float("inf")
    for _ in range(args.repeat):
        with engine.profile() as p:
            mm(a)
        best = min(best, sum(k["time_ns"] for k in p.kernels) * 1e-9)
    ours = 2 * n ** 3 / best / 1e9
    if peer.cuda:
        x = peer.torch.from_numpy(a_np).cuda()
        theirs = 2 * n ** 3 / peer.time(lambda: x @ x, args.repeat) / 1e9
        return f"GEMM n={n} (device time, packing included) vs cuBLAS fp32", ours, theirs, "GFLOP/s"
    theirs = 2 * n ** 3 / best_of(lambda: a_np @ a_np, repeat=args.repeat) / 1e9
    return f"GEMM n={n} (device time, packing included) vs numpy", ours, theirs, "GFLOP/s"


def row_conv(dev, peer, args):
    b = 64 if dev.kind == "gpu" else 8
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((b, 64, 32, 32), dtype=np.float32)
    w_np = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    conv = engine.nn.Conv2d(64, 64, 3, padding=1, device=dev)
    conv.weight.assign_(engine.tensor(w_np, device=dev))
    x = engine.tensor(x_np, device=dev)

    def fwd_bwd(x):
        conv.weight.grad = conv.bias.grad = None
        out = conv(x)
        (out * out).mean().backward()
        return conv.weight.grad
    step = engine.compile(fwd_bwd)
    step(x).numpy()
    best = float("inf")
    for _ in range(args.repeat):
        dev.synchronize()
        t0 = time.perf_counter()
        step(x)
        dev.synchronize()
        best = min(best, time.perf_counter() - t0)
    theirs = None
    if peer.torch is not None:
        t = peer.torch
        tc = t.nn.Conv2d(64, 64, 3, padding=1).to(peer.where)
        tx = t.from_numpy(x_np).to(peer.where)

        def tf():
            tc.zero_grad()
            out = tc(tx)
            (out * out).mean().backward()
        tf()
        theirs = 1 / peer.time(tf, args.repeat)
    return f"conv 3x3 64->64, 32x32, batch {b}, forward + backward", 1 / best, theirs, "steps/s"


def row_sum(dev, peer, args):
    n = 1 << (26 if dev.kind == "gpu" else 24)
    x_np = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    x = engine.tensor(x_np, device=dev)
    s = engine.compile(lambda v: v.sum())
    got = s(x).item()
    assert abs(got - float(x_np.astype(np.float64).sum())) <= 1e-3 * np.abs(x_np).sum() / np.sqrt(n) + 1e-2
    best = float("inf")
    for _ in range(args.repeat):
        with engine.profile() as p:
            s(x)
        best = min(best, sum(k["time_ns"] for k in p.kernels) * 1e-9)
    ours = 4 * n / best / 1e9
    theirs = None
    if peer.torch is not None:
        tx = peer.torch.from_numpy(x_np).to(peer.where)
        theirs = 4 * n / peer.time(lambda: tx.sum(), args.repeat, 10) / 1e9
    return f"sum of 2^{n.bit_length() - 1} floats (device time, all stages)", ours, theirs, "GB/s"


def row_bigmlp(dev, peer, args):
    ours, theirs = mlp_rates(dev, peer, (784, 4096, 4096, 10), 1024, max(args.steps // 2, 10))
    return "MLP 784-4096-4096-10 b1024, compiled step", ours / 1024, (theirs / 1024 if theirs else None), "steps/s"


def row_chain(dev, peer, args):
    n = 1 << (26 if dev.kind == "gpu" else 22)
    rng = np.random.default_rng(0)
    x = engine.tensor(rng.standard_normal(n, dtype=np.float32), device=dev)
    y = engine.tensor(rng.standard_normal(n, dtype=np.float32), device=dev)
    chain = engine.compile(lambda a, b: ((a * 2 + b).relu() * a))
    copy = engine.compile(lambda a: a * 1.0000001)    # one read, one write: the copy bound
    chain(x, y).numpy()
    copy(x).numpy()
    t_chain = t_copy = float("inf")
    for _ in range(args.repeat):
        with engine.profile() as p:
            chain(x, y)
        assert len(p.kernels) == 1, [k["name"] for k in p.kernels]
        t_chain = min(t_chain, p.kernels[0]["time_ns"] * 1e-9)
        with engine.profile() as p:
            copy(x)
        t_copy = min(t_copy, p.kernels[0]["time_ns"] * 1e-9)
    # the chain moves 3 arrays (2 in, 1 out), the copy 2
    return f"fused chain ((x*2+y).relu()*x), 2^{n.bit_length() - 1} floats, one kernel, vs a copy kernel", \
        12 * n / t_chain / 1e9, 8 * n / t_copy / 1e9, "GB/s"


def row_curve(dev, peer, args):
    """Loss curves from the same initial weights: the largest relative difference."""
    if peer.torch is None:
        return "loss curve vs torch (Adam, 30 steps)", None, None, "max rel diff"
    engine.manual_seed(1)
    model = _mlp((64, 128, 64, 10), dev)
    tm = _torch_mlp(peer, model)
    opt = engine.optim.Adam(model.parameters(), lr=1e-3)
    topt = peer.torch.optim.Adam(tm.parameters(), lr=1e-3)
    step = engine.training_step(model, F.cross_entropy, opt)
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(30):
        x, y = rng.standard_normal((32, 64), dtype=np.float32), rng.integers(0, 10, 32)
        ours = step(engine.tensor(x, device=dev), engine.tensor(y, device=dev)).item()
        topt.zero_grad()
        tl = peer.torch.nn.functional.cross_entropy(tm(peer.torch.from_numpy(x).to(peer.where)),
                                                    peer.torch.from_numpy(y).to(peer.where))
        tl.backward()
        topt.step()
        worst = max(worst, abs(ours - tl.item()) / abs(tl.item()))
    return "loss curve vs torch, same initial weights (Adam, 30 steps)", worst, None, "max rel diff"


ROWS = {"mlp": row_mlp, "plain": row_plain, "cold": row_cold, "gemm": row_gemm, "conv": row_conv,
        "sum": row_sum, "bigmlp": row_bigmlp, "chain": row_chain, "curve": row_curve}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--rows", default=None, help=f"comma-separated, of {','.join(ROWS)}")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    dev = engine.runtime.get_device(args.device)
    peer = Peer(dev)
    print(header(dev))
    print(f"peer: torch {peer.torch.__version__ if peer.torch else '(not installed)'} on {peer.where}")
    rows = (args.rows or (GPU_ROWS if dev.kind == "gpu" else CPU_ROWS)).split(",")
    print(f"| what | engine | peer | engine/peer | unit |\n|---|---|---|---|---|")
    for name in rows:
        try:
            what, ours, theirs, unit = ROWS[name](dev, peer, args)
        except Exception as e:   # one row failing must not hide the others
            print(f"| {name} | failed: {type(e).__name__}: {str(e)[:200]} | | | |", flush=True)
            continue
        ratio = f"{ours / theirs:.2f}" if ours is not None and theirs else "-"
        fmt = (lambda v: "-" if v is None else (f"{v:.3g}" if v < 100 else f"{v:,.0f}"))
        print(f"| {what} | {fmt(ours)} | {fmt(theirs)} | {ratio} | {unit} |", flush=True)


if __name__ == "__main__":
    main()
