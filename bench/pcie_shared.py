"""Host <-> device bandwidth when every GPU of the host moves data at once: what a ring of
GPU nodes streaming through host memory (cluster/shmstream.py) can get per step, since
each node downloads its gradients and uploads the other ranks' at the same time.

    python -m bench.pcie_shared [--mb 80] [--repeat 10]

For 1 GPU and then all GPUs together (one process per GPU, started at one instant), and
for downloads alone, uploads alone and both directions at once (two queues): GB/s per
GPU and per direction, best of --repeat.  Transfers go between a device buffer and a
page-locked ALLOC_HOST_PTR mapping, the fastest path bench.host_transfer found.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

MODES = ("down", "up", "both")


def worker(index: int, mb: float, repeat: int, start: float) -> dict:
    import pyopencl as cl
    import engine
    dev = engine.runtime.get_device(str(index))
    ctx, n = dev.context, int(mb * 2**20) // 4
    down_q, up_q = cl.CommandQueue(ctx, dev.cl_device), cl.CommandQueue(ctx, dev.cl_device)
    mf = cl.mem_flags
    dbuf = [cl.Buffer(ctx, mf.READ_WRITE, 4 * n) for _ in range(2)]
    hbuf = [cl.Buffer(ctx, mf.READ_WRITE | mf.ALLOC_HOST_PTR, 4 * n) for _ in range(2)]
    host = [cl.enqueue_map_buffer(down_q, b, cl.map_flags.READ | cl.map_flags.WRITE, 0, (n,),
                                  np.float32, is_blocking=True)[0] for b in hbuf]
    host[1][:] = 1.0
    out = {}
    time.sleep(max(0.0, start - time.time()))
    for mode in MODES:
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            evs = []
            if mode in ("down", "both"):
                evs.append(cl.enqueue_copy(down_q, host[0], dbuf[0], is_blocking=False))
            if mode in ("up", "both"):
                evs.append(cl.enqueue_copy(up_q, dbuf[1], host[1], is_blocking=False))
            down_q.flush()
            up_q.flush()
            cl.wait_for_events(evs)
            best = min(best, time.perf_counter() - t)
        out[mode] = 4 * n / best / 1e9
    return out


def run(gpus: list[int], mb: float, repeat: int) -> list[dict]:
    start = time.time() + 8.0             # every process has made its buffers by then
    procs = [subprocess.Popen([sys.executable, "-m", "bench.pcie_shared", "--worker", str(i), "--mb", str(mb),
                               "--repeat", str(repeat), "--start", str(start)], stdout=subprocess.PIPE, text=True)
             for i in gpus]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=80.0)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker is not None:
        print(json.dumps(worker(a.worker, a.mb, a.repeat, a.start)))
        return
    import engine
    gpus = [d.index for d in engine.devices() if d.kind == "gpu"]
    if not gpus:
        raise SystemExit("no GPU: this measures GPUs sharing the host's links")
    print(f"{a.mb:g} MB per transfer, best of {a.repeat}; GB/s per GPU (down / up)\n")
    print("| GPUs at once | down alone | up alone | both directions at once |")
    print("|---|---|---|---|")
    for group in ([gpus[0]], gpus) if len(gpus) > 1 else ([gpus[0]],):
        res = run(group, a.mb, a.repeat)
        cell = {m: " / ".join(f"{r[m]:.1f}" for r in res) for m in MODES}
        print(f"| {len(group)} | {cell['down']} | {cell['up']} | {cell['both']} (each direction) |")


if __name__ == "__main__":
    main()
