"""An MLP's training step against tinygrad on the same OpenCL device, side by side in one run.

    python -m bench.tinygrad_mlp [--models wide big] [--steps 30] [--rounds 2] [--icd FILE]

Both train the same MLP (Adam, cross entropy, ReLU) from the same initial weights on the
same batches, already on the device: the engine's compiled step (engine.training_step) on
the engine's default device (ENGINE_DEVICE), tinygrad's TinyJit step on its OpenCL backend
(DEV=CL, or `--tinygrad-dev`) through the same OpenCL driver, in a child process whose
OpenCL loader sees only that driver's ICD (`--icd`: by default the NVIDIA ICD for an
NVIDIA device, else the PoCL that the pyopencl wheel carries, found through
OCL_ICD_VENDORS and LD_LIBRARY_PATH).  tinygrad uses the first OpenCL platform it finds,
so one ICD keeps it on the same device.

Printed per model: samples/s of each (the best of `--rounds` interleaved rounds, each
timing `--steps` steps after the first CHECK steps), engine/tinygrad, and the largest
relative difference of the first CHECK steps' losses (the same arithmetic in float32:
about 1e-6).  tinygrad comes with the `bench` extra (or `pip install tinygrad`); the
engine never imports it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import relu_mlp

MODELS = {"digits": ([64, 128, 64, 10], 256), "wide": ([784, 1024, 1024, 10], 512), "big": ([784, 4096, 4096, 10], 1024)}
LR = 1e-3
BATCHES = 4      # distinct batches on the device, cycled
CHECK = 5        # the first steps, whose losses are compared (and not timed)


def problem(sizes, B, seed: int = 0) -> dict:
    """Initial weights (torch's layout, out x in, as both frameworks keep them) and
    BATCHES batches of rows and labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        bound = 1 / np.sqrt(a)
        arrays[f"w{i}"] = rng.uniform(-bound, bound, (b, a)).astype(np.float32)
        arrays[f"b{i}"] = rng.uniform(-bound, bound, b).astype(np.float32)
    arrays["x"] = rng.standard_normal((BATCHES, B, sizes[0]), dtype=np.float32)
    arrays["y"] = rng.integers(0, sizes[-1], (BATCHES, B)).astype(np.int32)
    return arrays


def engine_run(sizes, arrays: dict, steps: int) -> dict:
    import engine
    from engine import nn
    from engine.nn import functional as F
    model = relu_mlp(nn, sizes)
    model.load_state_dict({f"{2 * i}.{p}": arrays[f"{p[0]}{i}"] for i in range(len(sizes) - 1) for p in ("weight", "bias")})
    step = engine.training_step(model, F.cross_entropy, engine.optim.Adam(model.parameters(), lr=LR))
    xs, ys = [engine.tensor(x) for x in arrays["x"]], [engine.tensor(y) for y in arrays["y"]]
    losses = [float(step(xs[i % BATCHES], ys[i % BATCHES]).item()) for i in range(CHECK)]
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(xs[i % BATCHES], ys[i % BATCHES])
    loss.item()
    return {"losses": losses, "seconds": time.perf_counter() - t0}


def tinygrad_worker(path: str, sizes, steps: int) -> dict:
    """The tinygrad side (run in a child process: its OpenCL loader must see one ICD)."""
    from tinygrad import Device, Tensor, TinyJit, nn
    from tinygrad.helpers import Context
    from importlib.metadata import version
    arrays = dict(np.load(path))
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        lin = nn.Linear(a, b)
        lin.weight, lin.bias = Tensor(arrays[f"w{i}"]), Tensor(arrays[f"b{i}"])
        layers.append(lin)

    def forward(x):
        for lin in layers[:-1]:
            x = lin(x).relu()
        return layers[-1](x)

    opt = nn.optim.Adam(nn.state.get_parameters(layers), lr=LR)
    xs = [Tensor(x).realize() for x in arrays["x"]]
    ys = [Tensor(y).realize() for y in arrays["y"]]

    @TinyJit
    @Context(TRAINING=1)
    def step(x, y):
        opt.zero_grad()
        loss = forward(x).sparse_categorical_crossentropy(y).backward()
        # realized with the update: a loss realized after opt.step() reads the new weights
        Tensor.realize(loss, *opt.schedule_step())
        return loss

    losses = [float(step(xs[i % BATCHES], ys[i % BATCHES]).item()) for i in range(CHECK)]
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(xs[i % BATCHES], ys[i % BATCHES])
    loss.item()
    return {"losses": losses, "seconds": time.perf_counter() - t0, "device": Device.DEFAULT,
            "version": version("tinygrad")}


def default_icd(device) -> str:
    if "nvidia" in device.platform.lower():
        return "/etc/OpenCL/vendors/nvidia.icd"
    import pyopencl
    return os.path.join(os.path.dirname(pyopencl.__file__), ".libs", "pocl.icd")


def tinygrad_run(dev: str, icd: str, path: str, sizes, steps: int) -> dict:
    env = dict(os.environ, DEV=dev)
    if dev == "CL":
        libs = os.path.dirname(icd)
        env.update(OCL_ICD_VENDORS=icd,
                   LD_LIBRARY_PATH=os.pathsep.join(p for p in (libs, os.environ.get("LD_LIBRARY_PATH")) if p))
    out = subprocess.run([sys.executable, "-m", "bench.tinygrad_mlp", "--worker", path, "--sizes", *map(str, sizes),
                          "--steps", str(steps)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"tinygrad failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["wide", "big"], choices=sorted(MODELS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--icd", help="the OpenCL ICD file tinygrad's loader may see (default: see above)")
    ap.add_argument("--tinygrad-dev", default="CL",
                    help="tinygrad's backend (DEV=...): CL, the same OpenCL driver (default); CUDA or NV on NVIDIA, "
                         "tinygrad's own paths, for reference")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(tinygrad_worker(a.worker, a.sizes, a.steps)))
        return
    try:
        import tinygrad  # noqa: F401
    except ImportError:
        raise SystemExit("tinygrad is not installed here: pip install tinygrad")
    import engine
    from bench.common import header
    dev = engine.default_device()
    icd = a.icd or default_icd(dev)
    where = f" through {icd}" if a.tinygrad_dev == "CL" else ""
    print(f"tinygrad side by side; {header(dev)}; tinygrad DEV={a.tinygrad_dev}{where}", flush=True)
    lines = [f"| model | batch | engine samples/s | tinygrad ({a.tinygrad_dev}) samples/s | engine/tinygrad | first losses, max rel diff |",
             "|---|---|---|---|---|---|"]
    for name in a.models:
        sizes, B = MODELS[name]
        arrays = problem(sizes, B)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "problem.npz")
            np.savez(path, **arrays)
            best = {"engine": 0.0, "tinygrad": 0.0}
            for r in range(a.rounds):
                e = engine_run(sizes, arrays, a.steps)
                t = tinygrad_run(a.tinygrad_dev, icd, path, sizes, a.steps)
                for k, res in (("engine", e), ("tinygrad", t)):
                    best[k] = max(best[k], a.steps * B / res["seconds"])
                diff = float(np.max(np.abs(np.subtract(e["losses"], t["losses"])) / np.abs(t["losses"])))
                print(f"  {name} round {r}: engine {a.steps * B / e['seconds']:,.0f} samples/s, tinygrad "
                      f"{a.steps * B / t['seconds']:,.0f} ({t['device']}, tinygrad {t['version']}); first losses "
                      f"{e['losses'][0]:.5f} / {t['losses'][0]:.5f}, max rel diff {diff:.1e}", flush=True)
        lines.append(f"| MLP {'-'.join(map(str, sizes))} | {B} | {best['engine']:,.0f} | {best['tinygrad']:,.0f} | "
                     f"{best['engine'] / best['tinygrad']:.2f}x | {diff:.1e} |")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
