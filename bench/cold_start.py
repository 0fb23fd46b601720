"""The first training step in a fresh process with empty caches (issue 10), variant by
variant, interleaved, each in its own process with its own empty engine and PoCL caches:

    python -m bench.cold_start [--rounds 3] [--workers 0,1,2] [--before DIR] [--steady]

``--workers``: ENGINE_BUILD_WORKERS values to compare (0 = every kernel built on its own);
``--before DIR``: also run the same step from another checkout (e.g. a ``git worktree`` of
an older commit), as the baseline; ``--steady`` also times later steps (compiled step,
samples/s) in each process, so a faster first step that slows the steady state shows.
Prints the median of the rounds per variant: seconds to the first step (device probe
included: with an empty cache the device is probed first), CPU-seconds of the whole fresh
process and its build children (interpreter start and imports included; on a machine whose
cores the cold step saturates this is what the first step's time follows), kernels built,
programs compiled as groups, and the probe's own seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

from bench.common import header

STEP = r"""
import json, sys, time, numpy as np, engine
from engine.nn import functional as F
dev = engine.runtime.get_device(None)
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
loss = step(x, y).item()
first = time.perf_counter() - t0
rate = None
if STEADY:
    for _ in range(3):
        step(x, y).item()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(10):
            out = step(x, y)
        out.item()
        best = min(best, (time.perf_counter() - t) / 10)
    rate = 128 / best
print(json.dumps({"first_s": first, "loss": loss, "kernels": dev.stats["builds"],
                  "programs": dev.stats.get("programs", 0), "probe_s": dev.capabilities().get("probe_s"),
                  "samples_s": rate}))
"""


def run_once(tree, workers, steady):
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ENGINE_CACHE_DIR=os.path.join(tmp, "engine"), POCL_CACHE_DIR=os.path.join(tmp, "pocl"),
                   PYTHONPATH=tree)
        if workers is not None:
            env["ENGINE_BUILD_WORKERS"] = str(workers)
        code = STEP.replace("STEADY", "True" if steady else "False")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)   # the build children are reaped by their parent
        if p.returncode:
            raise RuntimeError(p.stderr[-2000:])
        out = json.loads(p.stdout.strip().splitlines()[-1])
        out["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)
        return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--before", default=None, help="another checkout to run as the baseline")
    ap.add_argument("--steady", action="store_true")
    args = ap.parse_args(argv)
    import engine
    print(header(engine.default_device()))
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    variants = ([("before", args.before, None)] if args.before else []) + \
        [(f"workers={w}", here, int(w)) for w in args.workers.split(",") if w != ""]
    results = {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        for name, tree, workers in variants:
            out = run_once(tree, workers, args.steady)
            results[name].append(out)
            print(f"round {r + 1} {name}: {json.dumps(out)}", flush=True)
    print("| variant | first step s (median) | CPU s, all processes (median) | kernels built | programs as groups | "
          "probe s | steady samples/s |")
    print("|---|---|---|---|---|---|---|")
    med = lambda xs: statistics.median(xs) if xs else None
    for name, rows in results.items():
        rates = [o["samples_s"] for o in rows if o["samples_s"]]
        print(f"| {name} | {med([o['first_s'] for o in rows]):.2f} | {med([o['cpu_s'] for o in rows]):.2f} | "
              f"{rows[0]['kernels']} | {rows[0]['programs']} | "
              f"{med([o['probe_s'] or 0 for o in rows]):.2f} | {f'{med(rates):,.0f}' if rates else '-'} |")


if __name__ == "__main__":
    main()
