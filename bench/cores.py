"""How far the host's CPUs themselves scale, without any communication: the same work in
1, 2, 4 ... processes at once, each pinned to its own slice of CPUs (as `bench.scaling
--pin` gives engine nodes and DDP ranks), so a data-parallel efficiency can be read against
what the hardware allows (shared caches, memory bandwidth, SMT siblings a VM hides).

    python -m bench.cores [--workers 1 2 4] [--seconds 3] [--work torch|numpy|engine]

Every process runs forward + backward of MLP 784-1024-1024-10 on a batch of 128 (torch),
or a 512 x 1024 x 1024 matmul (numpy), or the engine's compiled training step on that MLP
(PoCL, `--work engine`), for ``--seconds``, and reports its rate. Columns: per-worker rate
when W run together, over the rate of one running alone on the same size slice
("per-worker ratio"); the aggregate speedup is W x that ratio. A data-parallel run on W
workers cannot beat the aggregate speedup of its own compute here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.common import commit
from bench.scaling import cpu_slices

_WORK = r"""
import json, os, sys, time
cpus = json.loads(sys.argv[1]); seconds = float(sys.argv[2]); work = sys.argv[3]
os.sched_setaffinity(0, cpus)
for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POCL_MAX_PTHREAD_COUNT", "POCL_CPU_MAX_CU_NUM"):
    os.environ[k] = str(len(cpus))
import numpy as np
if work == "torch":
    import torch
    torch.set_num_threads(len(cpus))
    m = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                            torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    def one():
        m.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward()
elif work == "engine":
    import engine
    from engine.nn import functional as F
    dev = engine.runtime.get_device(None)
    m = engine.nn.Sequential(engine.nn.Linear(784, 1024, device=dev), engine.nn.ReLU(),
                             engine.nn.Linear(1024, 1024, device=dev), engine.nn.ReLU(),
                             engine.nn.Linear(1024, 10, device=dev))
    step = engine.training_step(m, F.cross_entropy, engine.optim.SGD(m.parameters(), lr=1e-3))
    rng = np.random.default_rng(0)
    x = engine.tensor(rng.standard_normal((128, 784), dtype=np.float32), device=dev)
    y = engine.tensor(rng.integers(0, 10, 128), device=dev)
    def one():
        step(x, y).item()
else:
    a = np.random.default_rng(0).standard_normal((512, 1024), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
    def one():
        a @ b
for _ in range(3):
    one()
print("ready", flush=True)
sys.stdin.readline()                     # start together
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    one(); n += 1
print(json.dumps({"rate": n / (time.perf_counter() - t0)}), flush=True)
"""


def run_together(slices, seconds, work) -> list:
    """Per-process rates (iterations/s) of len(slices) processes started together."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", _WORK, json.dumps(s), str(seconds), work], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for s in slices]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a worker did not start (exit {p.wait()})")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["rate"] for p in procs]
    return rates


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--work", choices=["torch", "numpy", "engine"], default="torch")
    a = ap.parse_args(argv)
    k = len(os.sched_getaffinity(0)) // max(a.workers)
    print(f"commit {commit()}; host: {os.cpu_count()} CPUs, {k} per worker, work: {a.work}, "
          f"{a.seconds:g} s per run, load {os.getloadavg()[0]:.1f}")
    print("| workers | CPUs | per-worker rate (it/s) | per-worker ratio | aggregate speedup |")
    print("|---|---|---|---|---|")
    alone = None
    for w in a.workers:
        slices = cpu_slices(w, k)       # the same slices as `bench.scaling --pin` (too few CPUs: a clear exit)
        rates = run_together(slices, a.seconds, a.work)
        mean = sum(rates) / len(rates)
        alone = alone or mean
        print(f"| {w} | {w * k} | {mean:.1f} ({min(rates):.1f}-{max(rates):.1f}) | {mean / alone:.2f} | "
              f"{w * mean / alone:.2f} |", flush=True)


if __name__ == "__main__":
    main()
