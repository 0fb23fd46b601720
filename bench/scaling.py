"""Data-parallel scaling of the engine's nodes beside PyTorch DDP (gloo, and nccl where CUDA
is present), on the same models, devices and worker counts, as one table.

    ./dev bench scaling [--workers 1 2 4] [--steps 30] [--warmup 5] [--quick] [--pin] [--notes bench/NOTES.md]
    ENGINE_DEVICE=nvidia python3 -m bench.scaling --workers 1 2      # one node / DDP rank per GPU
    BENCH_NODE_PHASES=1 ...   also print each node's streamed-step phases (host ms, medians of 50 steps)
    --hostprof DIR   each node's host time per step, split into driver calls, waits and the
              step functions (bench/hostprof: steps 20-120, so --steps 130 or more)
    ENGINE_NODE_TIMELINE=1 ...   and when the step's events ended on the device (profiling: slower
              steps, ~1.3 ms on the big MLP's two-node step; leave it off for the table)
    --alone   also train one engine worker on each share of the batch by itself, and print each
              engine step against that (issue 14's bound: step <= 1.15x max(compute, all-reduce))

Workloads (issue 14): MLP 784-1024-1024-10, global batch 512, and MLP 784-4096-4096-10,
global batch 1024, Adam, random MNIST-shaped data; the global batch is split evenly over the
workers (strong scaling).  `--quick`: two small MLPs, few steps (a check that it all runs).

Systems, each in fresh processes:
  * engine: one `engine-node` per worker, driven by `Cluster.fit` (the public driver API);
    with GPUs, node i gets `--device` of the i-th GPU; on CPUs every node uses the default
    (PoCL) device with cores/workers threads;
  * DDP-gloo, DDP-nccl: torch.nn.parallel.DistributedDataParallel, rank i on GPU i (or on the
    CPU with cores/workers threads), TF32 off.

`--pin` (CPU workers): worker i gets its own slice of the CPUs this process may use, the same
size k = CPUs // max(--workers) in every row, the 1-worker baseline included, so the
efficiency compares equal hardware per worker (W workers on W x k CPUs against one on k):
engine nodes through `engine-node --cpus` (which sets PoCL's thread count to k), DDP ranks
through sched_setaffinity and torch.set_num_threads(k).  Without it every worker may run
anywhere with cores/workers threads.

Columns, per step (medians after the warm-up):
  step      wall time per step (samples/s = global batch / step)
  compute   forward + backward of the slowest worker (engine: what the nodes report, gradient
            download included; DDP: measured in no_sync steps, i.e. without any all-reduce)
  all-reduce  the gradient all-reduce on its own (engine: as the nodes report it; with the
            streamed all-reduce of GPU nodes on one host, cluster/shmstream.py, only the time
            a node waits for the other ranks' pieces: the copies overlap backward and count
            as compute; DDP: a dist.all_reduce of a buffer of the gradients' size)
  exposed   what the all-reduce adds to the step, i.e. not hidden behind backward (engine:
            the all-reduce time unless the nodes report `exposed_allreduce_s`; DDP: step
            minus the same step under no_sync)
  rest      step - compute - exposed (optimizer, driver round trip, checks, Python)
  efficiency  samples/s(n) / (n x samples/s(1)) of the same system
  vs gloo / vs nccl  engine samples/s over DDP's on the same model and workers
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.allreduce import env as worker_env, machine
from bench.common import relu_mlp
from cluster import Cluster
from cluster.node_cli import cpu_list, pin_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = {"name": "adam", "lr": 1e-3}
MODELS = [("MLP 784-1024-1024-10", [784, 1024, 1024, 10], 512), ("MLP 784-4096-4096-10", [784, 4096, 4096, 10], 1024)]
QUICK = [("MLP 784-128-128-10", [784, 128, 128, 10], 128), ("MLP 784-256-256-10", [784, 256, 256, 10], 256)]
ROWS = 8192
HOSTPROF = {"dir": None}     # --hostprof: where the nodes write their host time (bench/hostprof)
# how often the nodes report their steps (Cluster's report_s): its default, as in a user's
# fit; a report every step costs a node's host time (bench/NOTES.md)
REPORT_S = 0.5


def start_nodes(n: int, secret: str, devices=None, node_args=(), env=None, cpus=None):
    """n engine-node processes on free loopback ports; devices[i], if given, is node i's
    --device (None: the default device); cpus[i], if given, its --cpus (a list of CPUs);
    node_args go to every node's command line; env: extra environment variables.  A node
    that fails to start raises with what it wrote to stderr."""
    env = worker_env(ENGINE_NODE_SECRET=secret, **(env or {}))
    if HOSTPROF["dir"]:     # bench/hostprof/sitecustomize.py, imported by the nodes only
        env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "bench", "hostprof"), env["PYTHONPATH"]])
        env["BENCH_HOSTPROF"] = HOSTPROF["dir"]
    procs = []
    for i in range(n):
        dev = ["--device", str(devices[i])] if devices and devices[i] is not None else []
        dev += ["--cpus", cpu_list(cpus[i])] if cpus else []
        err = tempfile.TemporaryFile("w+")   # a file, not a pipe nobody reads
        p = subprocess.Popen([sys.executable, "-m", "cluster.node", "--listen", "tcp://127.0.0.1:*",
                              "--metrics", "127.0.0.1:0", *dev, *node_args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=err, text=True)
        p.err = err
        procs.append(p)
    addrs = []
    for p in procs:
        line = p.stdout.readline()
        if not line.startswith("engine-node ready"):
            for q in procs:
                q.kill()
            p.wait(10)
            p.err.seek(0)
            raise RuntimeError(f"engine-node {' '.join(p.args[3:])} did not start: {line!r}\n{p.err.read()[-2000:]}")
        addrs.append(dict(kv.split("=", 1) for kv in line.split()[2:])["control"])
    return procs, addrs


def fit_on_nodes(devices, model, loss_fn, spec: dict, data, B: int, steps: int, node_args=(), env=None, cpus=None,
                 **cluster_kw):
    """Train on fresh engine-node processes, one per entry of `devices` (cpus: each one's
    --cpus, or None); returns the FitResult and the wall-clock time at which the driver saw
    each step (nodes that step on their own are asked to report every step:
    Cluster(report_s=0) where it exists).  Pinned nodes must report the CPUs they were given."""
    secret = secrets.token_hex(8)
    procs, addrs = start_nodes(len(devices), secret, devices, node_args, env, cpus)
    stamps, told = [], {}
    if "report_s" in inspect.signature(Cluster).parameters:   # nodes that step on their own report
        cluster_kw.setdefault("report_s", 0)                   # every step, so on_step keeps time

    def on_step(rec):
        stamps.append(time.perf_counter())
        told.setdefault("cpus", [(n.info or {}).get("cpus") for n in cl.nodes])   # what each hello said
    try:
        cl = Cluster(addrs, secret, heartbeat_s=1.0, missed=30, **cluster_kw)
        res = cl.fit(model, loss_fn, spec, data, epochs=10**6, global_batch=B, max_steps=steps, on_step=on_step)
        if cpus and told.get("cpus") != [sorted(c) for c in cpus]:
            raise RuntimeError(f"nodes were given CPUs {cpus} but report {told.get('cpus')}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        for i, p in enumerate(procs):
            if HOSTPROF["dir"] and os.path.exists(f := os.path.join(HOSTPROF["dir"], f"hostprof_{p.pid}.txt")):
                with open(f) as fh:
                    print(f"node {i} host time ({f}):\n{fh.read()}", file=sys.stderr)
        if os.environ.get("BENCH_NODE_PHASES"):     # where streamed steps spend the host's time
            for i, p in enumerate(procs):
                p.err.seek(0)
                for line in p.err.read().splitlines():
                    if "streamed steps:" in line:
                        print(f"node {i}: {line.split('streamed steps: ', 1)[1]}", file=sys.stderr)
    return res, stamps


def cpu_threads(n: int) -> int:
    return max(1, (os.cpu_count() or 1) // n)


def cpu_slices(n: int, size: int) -> list[list[int]]:
    """--pin: n disjoint slices of `size` of the CPUs this process may use, in order."""
    allowed = sorted(os.sched_getaffinity(0))
    if size < 1 or n * size > len(allowed):
        raise SystemExit(f"--pin: {n} worker(s) of {size} CPU(s) each, but this process may use "
                         f"{len(allowed)} CPUs ({cpu_list(allowed)})")
    return [allowed[i * size:(i + 1) * size] for i in range(n)]


def _seconds(v) -> float:
    """A history field: one number, or one per node (the slowest counts)."""
    return float(max(v)) if isinstance(v, (list, tuple)) else float(v)


# --- engine ------------------------------------------------------------------------------
def gpu_indices() -> list[int]:
    import engine
    return [d.index for d in engine.devices() if d.kind == "gpu"]


def parse_variant(spec: str):
    """'NAME=WORDS': an engine configuration.  Words: transport=T (Cluster's gradient
    transport), env:K=V (the nodes' environment), anything else goes to engine-node's
    command line (e.g. --overlap-mb 16).  Returns (name, node_args, env, cluster kwargs)."""
    name, _, words = spec.partition("=")
    node_args, env, kw = [], {}, {}
    for w in words.split():
        if w.startswith("transport="):
            kw["transport"] = w.split("=", 1)[1]
        elif w.startswith("env:"):
            k, _, v = w[4:].partition("=")
            env[k] = v
        else:
            node_args.append(w)
    return name or "engine", node_args, env, kw


def run_engine(sizes, B, n, steps, warmup, x, y, node_args=(), env=None, cluster_kw=None, pin=0,
               report_s: float = REPORT_S) -> dict:
    """pin: CPUs per node (--pin; CPU nodes only), 0: unpinned.  report_s: how often the
    nodes report their steps (Cluster's report_s; 0: every step)."""
    from engine import nn
    from engine.nn import functional as F
    gpus = gpu_indices()
    if gpus and len(gpus) < n:
        raise RuntimeError(f"{n} workers but {len(gpus)} GPU(s)")
    model = relu_mlp(nn, sizes)
    pinned = pin and not gpus
    # a pinned node sets PoCL's thread count to its CPUs itself (engine-node --cpus)
    env = dict(env or {}, **({} if gpus or pinned else {"POCL_MAX_PTHREAD_COUNT": str(cpu_threads(n)),
                                                          "POCL_CPU_MAX_CU_NUM": str(cpu_threads(n))}))
    cluster_kw = {"report_s": report_s, **(cluster_kw or {})}
    res, stamps = fit_on_nodes(gpus[:n] if gpus else [None] * n, model, F.cross_entropy, SPEC, (x, y), B, steps,
                               node_args=node_args, env=env, cpus=cpu_slices(n, pin) if pinned else None,
                               batch_multiple=B // n, rebalance_tolerance=1.0, **cluster_kw)
    timed = res.history[warmup:]
    if len(stamps) != steps or not timed:
        raise RuntimeError(f"the fit reported {len(stamps)} of {steps} steps")
    # when each step ended on its slowest node (progress reports carry it): the driver hears
    # of steps only every report_s seconds, in batches
    ends = [h.get("t") for h in res.history]
    if None in ends:
        ends = stamps
    step = (ends[-1] - ends[warmup - 1]) / len(timed)
    compute = statistics.median(_seconds(h["compute_s"]) for h in timed)
    ar = statistics.median(_seconds(h.get("allreduce_s", 0.0)) for h in timed)
    exposed = statistics.median(_seconds(h.get("exposed_allreduce_s", h.get("allreduce_s", 0.0))) for h in timed)
    return {"step": step, "compute": compute, "allreduce": ar, "exposed": exposed}


# --- PyTorch DDP (each rank a process running worker_ddp) -------------------------------
def worker_ddp(cfg: dict) -> None:
    if cfg.get("cpus"):   # --pin: before torch starts its threads, which inherit the set
        pin_threads(cfg["cpus"])
    import contextlib

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    rank, world, sizes, B = cfg["rank"], cfg["world"], cfg["sizes"], cfg["batch"]
    cuda = cfg["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        dev = torch.device("cuda", rank)
    else:
        torch.set_num_threads(cfg["threads"])
        dev = torch.device("cpu")
    dist.init_process_group(cfg["backend"], init_method=f"tcp://127.0.0.1:{cfg['port']}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = relu_mlp(nn, sizes).to(dev)
    ddp = DDP(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.Adam(ddp.parameters(), lr=SPEC["lr"])
    b = B // world + (rank < B % world)
    g = torch.Generator().manual_seed(rank)
    x = torch.rand(b, sizes[0], generator=g).to(dev)
    y = torch.randint(0, sizes[-1], (b,), generator=g).to(dev)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step(no_sync: bool):
        t0 = time.perf_counter()
        with ddp.no_sync() if no_sync else contextlib.nullcontext():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        loss.item()          # the loss read back every step, as the engine's nodes do
        return t1 - t0, time.perf_counter() - t0

    # no_sync and synchronised steps alternate, so a burst of load lands on both alike
    dist.barrier()
    times = {True: [], False: []}
    for i in range(cfg["warmup"] + cfg["steps"]):
        for no_sync in (True, False):
            t = step(no_sync)
            if i >= cfg["warmup"]:
                times[no_sync].append(t)
    out = {phase: [statistics.median(t[0] for t in times[ns]), statistics.median(t[1] for t in times[ns])]
           for phase, ns in (("no_sync", True), ("sync", False))}
    flat = torch.ones(sum(p.numel() for p in model.parameters()), device=dev)
    ar = []
    for i in range(cfg["warmup"] + cfg["steps"]):
        dist.barrier()
        sync()
        t = time.perf_counter()
        dist.all_reduce(flat)
        sync()
        ar.append(time.perf_counter() - t)
    out["allreduce"] = statistics.median(ar[cfg["warmup"]:])
    out["cpus"], out["threads"] = sorted(os.sched_getaffinity(0)), torch.get_num_threads()   # what --pin made of it
    print(json.dumps(out), flush=True)
    dist.destroy_process_group()


def run_ddp(backend, sizes, B, n, steps, warmup, cuda: bool, pin: int = 0) -> dict:
    """pin: CPUs per rank (--pin; CPU ranks only), 0: unpinned."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    slices = cpu_slices(n, pin) if pin and not cuda else None
    for r in range(n):
        threads = len(slices[r]) if slices else cpu_threads(n)
        cfg = {"rank": r, "world": n, "port": port, "backend": backend, "sizes": sizes, "batch": B, "steps": steps,
               "warmup": warmup, "device": "cuda" if cuda else "cpu", "threads": threads,
               "cpus": slices[r] if slices else None}
        env = worker_env()
        env["OMP_NUM_THREADS"] = str(threads)
        # NVLink multicast stays off on shared GPU hosts (it can take their GPUs out of service)
        for k, v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
            env.setdefault(k, v)
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.scaling", "--worker", json.dumps(cfg)],
                                      stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env))
    outs = []
    for p in procs:
        line = p.stdout.readline()
        if p.wait(timeout=600) != 0 or not line:
            raise RuntimeError(f"DDP-{backend} rank failed (exit {p.returncode})")
        outs.append(json.loads(line))
    if slices and [(o["cpus"], o["threads"]) for o in outs] != [(c, len(c)) for c in slices]:
        raise RuntimeError(f"DDP ranks were given CPUs {slices} but ran on "
                           f"{[(o['cpus'], o['threads']) for o in outs]} (CPUs, torch threads)")
    step = max(o["sync"][1] for o in outs)
    compute = max(o["no_sync"][0] for o in outs)
    exposed = max(0.0, step - max(o["no_sync"][1] for o in outs))
    return {"step": step, "compute": compute, "allreduce": max(o["allreduce"] for o in outs), "exposed": exposed}


def torch_info() -> tuple[bool, bool, str]:
    """(torch importable with gloo, CUDA devices present, description)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return False, False, "torch not importable: DDP rows left out"
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    return dist.is_gloo_available(), cuda, (f"torch {torch.__version__}" + (
        f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if cuda else ", CPU"))


# --- the table ---------------------------------------------------------------------------
def row_text(model, system, n, B, r, base) -> str:
    sps = B / r["step"]
    ms = lambda s: f"{s * 1e3:.1f}"
    eff = f"{sps / (n * base) * 100:.0f}%" if base else "-"
    return (f"| {model} | {system} | {n} | {sps:,.0f} | {eff} | {ms(r['step'])} | {ms(r['compute'])} | "
            f"{ms(r['allreduce'])} | {ms(r['exposed'])} | {ms(r['step'] - r['compute'] - r['exposed'])} | - | - |")


def main(argv=None):
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker_ddp(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", help="default: 1 2 on GPUs, 1 2 4 on CPUs")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small MLPs and 8 steps: a check that everything runs")
    ap.add_argument("--systems", nargs="+", default=["engine", "gloo", "nccl"])
    ap.add_argument("--notes", help="append the table to this file")
    ap.add_argument("--variant", action="append", default=[],
                    help="an engine configuration for the rows with 2+ workers, NAME=WORDS (repeatable): "
                         "transport=bf16, env:K=V, or engine-node options such as --overlap-mb 16; one worker "
                         "runs once, with the defaults (a ring of one never all-reduces)")
    ap.add_argument("--models", type=int, nargs="+", help="indices into the model list (default: all)")
    ap.add_argument("--batch", type=int, help="global batch of every model (default: each model's own)")
    ap.add_argument("--hostprof", metavar="DIR", help="write each node's host time per step into DIR "
                                                       "(bench/hostprof) and print it after each run")
    ap.add_argument("--report-s", type=float, default=REPORT_S,
                    help="how often engine nodes report their steps to the driver (Cluster's report_s; "
                         "0: every step, which costs each node host time)")
    ap.add_argument("--alone", action="store_true",
                    help="also train one engine worker on each share (global batch / workers) alone, and print "
                         "each engine step against it (issue 14's bound: a step <= 1.15x max(compute, all-reduce))")
    ap.add_argument("--pin", action="store_true",
                    help="CPU workers: worker i of W on its own CPUs, CPUs // max(--workers) of them in every row "
                         "(engine-node --cpus; DDP ranks: sched_setaffinity and torch.set_num_threads)")
    a = ap.parse_args(argv)
    if a.hostprof:
        os.makedirs(a.hostprof, exist_ok=True)
        HOSTPROF["dir"] = os.path.abspath(a.hostprof)
    if a.quick:
        a.steps, a.warmup = min(a.steps, 8), min(a.warmup, 3)
    gloo_ok, cuda, tinfo = torch_info()
    gpus = gpu_indices() if "engine" in a.systems else []
    # the peers train where the engine does: on CPUs when the engine's device is one, even on
    # a host with CUDA (a CPU comparison against DDP on GPUs says nothing)
    if cuda and not gpus and "engine" in a.systems:
        cuda, tinfo = False, tinfo + "; DDP on the CPU, as the engine"
    workers = a.workers or ([1, 2] if gpus or cuda else [1, 2, 4])
    systems = [s for s in a.systems if s == "engine" or (s == "gloo" and gloo_ok) or (s == "nccl" and cuda)]
    import engine
    dev = engine.default_device()
    pin = 0
    cpu_workers = ("engine" in systems and not gpus) or (not cuda and any(s != "engine" for s in systems))
    if a.pin and cpu_workers:
        pin = len(os.sched_getaffinity(0)) // max(workers)
        slices = {n: cpu_slices(n, pin) for n in workers}          # refuses too few CPUs now
        pinned = (f"; --pin: CPU workers on {pin} CPU(s) each, "
                  + ", ".join(f"{n} worker(s) on {' / '.join(cpu_list(c) for c in slices[n])}" for n in workers))
    else:
        pinned = "; --pin: no CPU workers, nothing pinned" if a.pin else ""
    head = (f"### Scaling beside DDP (`bench.scaling{' --quick' if a.quick else ''}{' --pin' if a.pin else ''}`, "
            f"{machine()}; engine device {'GPUs ' + str(gpus) if gpus else dev.name} ({dev.platform}); {tinfo}; "
            f"{a.steps} steps after {a.warmup} warm-up; engine nodes report every "
            f"{'step' if a.report_s <= 0 else f'{a.report_s:g} s'}{pinned})")
    print(head, flush=True)
    header = ["| model | system | workers | samples/s | efficiency | step ms | compute ms | all-reduce ms | "
              "exposed all-reduce ms | rest ms | vs DDP-gloo | vs DDP-nccl |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    rng = np.random.default_rng(0)
    lines, alone = [], []
    variants = [parse_variant(v) for v in a.variant] or [("engine", [], {}, {})]
    models = QUICK if a.quick else MODELS
    for name, sizes, B in [models[i] for i in (a.models or range(len(models)))]:
        if a.batch:
            name, B = f"{name} b{a.batch}", a.batch
        x, y = rng.random((ROWS, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], ROWS)
        results = {}
        for n in workers:
            runs = []
            if "engine" in systems:   # one worker: the defaults (a ring of one never all-reduces)
                runs += [("engine", "engine", ("engine", [], {}, {}))] if n == 1 else [
                    ("engine" if len(variants) == 1 and v[0] == "engine" else f"engine ({v[0]})", "engine", v)
                    for v in variants]
            runs += [(f"DDP-{s}", s, None) for s in systems if s != "engine"]
            for label, s, v in runs:
                try:
                    if s == "engine":
                        r = run_engine(sizes, B, n, a.steps, a.warmup, x, y, *v[1:], pin=pin, report_s=a.report_s)
                    else:   # with GPUs DDP-gloo also trains on them (gloo stages through the host)
                        r = run_ddp(s, sizes, B, n, a.steps, a.warmup, cuda, pin=pin)
                except Exception as e:   # one failed configuration must not lose the table
                    print(f"<!-- {name} {label} x{n} failed: {type(e).__name__}: {str(e)[:300]} -->", flush=True)
                    continue
                results[label, n] = r
                one = results.get(("engine" if s == "engine" else label, 1))
                lines.append(row_text(name, label, n, B, r, B / one["step"] if one else None))
                print(lines[-1], flush=True)
                if a.alone and s == "engine" and n > 1:
                    alone.append(_against_alone(name, label, n, B, r, sizes, a, x, y, pin))
    # engine rows are printed before their DDP peers have run: the final table has the ratios
    text = "\n".join([head, "", *header, *_with_ratios(lines)])
    if alone:
        text += "\n\n" + "\n".join(["| model | system | workers | step ms | one worker on its share alone, ms | "
                                     "step / alone |", "|---|---|---|---|---|---|", *alone])
    print("\n" + text)
    if a.notes:
        with open(a.notes, "a") as f:
            f.write("\n" + text + "\n")


def _against_alone(name, label, n, B, r, sizes, a, x, y, pin) -> str:
    """--alone: one engine worker trains a share of the global batch (B // n rows) by itself;
    the row sets the n-worker step against that step.  The issue's bound is 1.15x the larger
    of compute and all-reduce, and a share's step alone is that compute with no all-reduce,
    so step / alone <= 1.15 meets it whatever the all-reduce takes."""
    try:
        one = run_engine(sizes, B // n, 1, a.steps, a.warmup, x, y, pin=pin, report_s=a.report_s)
    except Exception as e:
        return f"| {name} | {label} | {n} | {r['step'] * 1e3:.1f} | failed: {type(e).__name__} | - |"
    line = f"| {name} | {label} | {n} | {r['step'] * 1e3:.1f} | {one['step'] * 1e3:.1f} | {r['step'] / one['step']:.2f}x |"
    print(line, flush=True)
    return line


def _with_ratios(lines):
    """Fill the engine rows' vs-DDP columns from the DDP rows of the same model and workers."""
    cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines]
    sps = {(c[0], c[1], c[2]): float(c[3].replace(",", "")) for c in cells}
    out = []
    for c in cells:
        if c[1].startswith("engine"):
            for col, peer in ((10, "DDP-gloo"), (11, "DDP-nccl")):
                p = sps.get((c[0], peer, c[2]))
                c[col] = f"{float(c[3].replace(',', '')) / p:.2f}x" if p else "-"
        out.append("| " + " | ".join(c) + " |")
    return out


if __name__ == "__main__":
    main()
