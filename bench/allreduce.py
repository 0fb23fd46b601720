"""Ring all-reduce bandwidth on loopback, next to torch.distributed (gloo) and the
ceiling of one raw ZeroMQ stream.

    ./dev bench allreduce [--sizes-mb 1 16 128] [--ranks 2 4] [--transports float32 bfloat16 float16]
                          [--torch-python PY] [--notes bench/NOTES.md]

Each configuration runs in fresh processes on 127.0.0.1.  Time is the median over
repetitions of the slowest rank (ranks are synchronised by a 1-element all-reduce
before each repetition); bus bandwidth = 2(n-1)/n x bytes / time, the per-link rate
(NCCL's convention), comparable across n.  Our ring authenticates each connection once
(cluster/auth.py, as in production) and sends data without a per-message MAC; the
ZeroMQ ceiling is shown without and with an HMAC per message, for comparison.
torch runs from --torch-python (default: this interpreter) if it can import torch.
--transports also times the ring with narrow gradient transport (cluster/transport.py:
bfloat16/float16 on the wire, float32 sums); its bus GB/s counts the float32 bytes reduced,
so it compares with the float32 row as time does (half the bytes travel).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

from cluster import transport as tp
from cluster.allreduce import BUCKET_BYTES

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECRET = b"bench-secret"


def io_threads() -> int:
    """The ring's ZeroMQ I/O threads; RING_IO_THREADS=1 reproduces the one-thread ring."""
    from cluster.ring import IO_THREADS
    return int(os.environ.get("RING_IO_THREADS", IO_THREADS))


def reps_for(mb: float) -> int:
    return 20 if mb <= 1 else 10 if mb <= 16 else 5


# --- workers (each in its own process) ----------------------------------------------------
def worker_ours(rank: int, sizes_mb, bucket_mb: float, segment_kb: float, transport: str = "float32",
                link: str = "tcp") -> None:
    import zmq
    from cluster import RingLinks, allreduce
    ctx = zmq.Context(io_threads=io_threads())   # RingLinks pins its sockets apart when there are two
    links = RingLinks(ctx, "tcp://127.0.0.1:*", SECRET, name=f"rank{rank}", timeout_s=120)
    # ipc: same-host neighbours connect through a Unix socket (ring.py), the TCP ring's algorithm;
    # shm: what engine-nodes on one host do, the sum through shared memory (localsum.py)
    os.environ["ENGINE_NODE_SHM"] = "on" if link == "shm" else "off"
    if link in ("ipc", "shm"):
        assert links.bind_local(), "no Unix socket for the ring"
    print(links.endpoint, flush=True)
    links.connect(1, rank, json.loads(sys.stdin.readline()))
    assert links.via.startswith("tcp" if link == "tcp" else "ipc"), (link, links.via)
    out, step = {}, 0
    for mb in sizes_mb:
        x = np.ones(int(mb * 2**20) // 4, np.float32)
        times = []
        for r in range(reps_for(mb) + 1):           # the first repetition warms up
            buf = x.copy()                              # before the barrier: page faults are not timed
            step += 1
            # barrier: one element per rank, so every chunk is non-empty and every rank waits
            # for every other (with one element, ranks with empty chunks would run ahead)
            allreduce(links, np.zeros(links.world, np.float32), step)
            t = time.perf_counter()
            step += 1
            allreduce(links, buf, step, bucket_bytes=int(bucket_mb * 2**20), segment_bytes=int(segment_kb * 1024) or None,
                      transport=transport)
            times.append(time.perf_counter() - t)
            assert buf[0] == links.world and buf[-1] == links.world
        out[str(mb)] = times[1:]
    print(json.dumps(out), flush=True)
    links.close(linger_ms=60_000)   # the last forwards may still be queued for a slower right
    ctx.term()                      # neighbour: exiting now would lose them and hang it


def worker_gloo(rank: int, world: int, port: int, sizes_mb) -> None:
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out = {}
    for mb in sizes_mb:
        x = torch.ones(int(mb * 2**20) // 4, dtype=torch.float32)
        times = []
        for r in range(reps_for(mb) + 1):
            buf = x.clone()
            dist.barrier()
            t = time.perf_counter()
            dist.all_reduce(buf)
            times.append(time.perf_counter() - t)
        out[str(mb)] = times[1:]
    print(json.dumps(out), flush=True)
    dist.destroy_process_group()


def worker_stream(role: str, endpoint: str, mb_total: int, msg_mb: int, mac: bool) -> None:
    """One raw PUSH->PULL stream: the most one TCP connection through ZeroMQ gives us."""
    import hashlib
    import hmac
    import zmq
    ctx = zmq.Context()
    n = mb_total // msg_mb
    if role == "send":
        s = ctx.socket(zmq.PUSH)
        s.connect(endpoint)
        buf = np.ones(msg_mb * 2**20, np.uint8)
        s.send(b"go")
        for _ in range(n):
            frames = [memoryview(buf)]
            if mac:
                frames.append(hmac.new(SECRET, buf, hashlib.sha256).digest())
            s.send_multipart(frames, copy=False)
        s.close(linger=-1)
    else:
        s = ctx.socket(zmq.PULL)
        s.bind(endpoint)
        print(s.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
        s.recv()
        t = time.perf_counter()
        for _ in range(n):
            fr = s.recv_multipart(copy=False)
            if mac:
                hmac.compare_digest(hmac.new(SECRET, fr[0].buffer, hashlib.sha256).digest(), fr[1].bytes)
        print(json.dumps({"gbps": mb_total * 2**20 / (time.perf_counter() - t) / 1e9}), flush=True)


# --- orchestration -------------------------------------------------------------------------
def env(**extra):
    """Workers import this checkout first, then whatever PYTHONPATH already holds (the GPU
    machine's packages live there)."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **extra)


def spawn(py, args):
    return subprocess.Popen([py, os.path.abspath(__file__), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env(), cwd=ROOT)


def collect(procs) -> list[dict]:
    outs = []
    for p in procs:
        line = p.stdout.readline()
        if p.wait(timeout=600) != 0 or not line:
            raise RuntimeError(f"worker {p.args} failed (exit {p.returncode})")
        outs.append(json.loads(line))
    return outs


def slowest_median(outs, mb) -> float:
    per_rep = zip(*[o[str(mb)] for o in outs])
    return statistics.median(max(r) for r in per_rep)


def run_ours(n, sizes, bucket_mb, segment_kb, transport="float32", link="tcp"):
    ps = [spawn(sys.executable, ["--worker", "ours", str(r), json.dumps(sizes), str(bucket_mb), str(segment_kb), transport,
                                 link])
          for r in range(n)]
    peers = [p.stdout.readline().strip() for p in ps]
    for p in ps:
        p.stdin.write(json.dumps(peers) + "\n")
        p.stdin.flush()
    outs = collect(ps)
    return {mb: slowest_median(outs, mb) for mb in sizes}


def run_gloo(py, n, sizes):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = collect([spawn(py, ["--worker", "gloo", str(r), str(n), str(port), json.dumps(sizes)]) for r in range(n)])
    return {mb: slowest_median(outs, mb) for mb in sizes}


def run_stream(mac: bool) -> float:
    recv = spawn(sys.executable, ["--worker", "stream", "recv", "tcp://127.0.0.1:*", "1024", "4", str(int(mac))])
    ep = recv.stdout.readline().strip()
    send = spawn(sys.executable, ["--worker", "stream", "send", ep, "1024", "4", str(int(mac))])
    res = json.loads(recv.stdout.readline())
    send.wait(60), recv.wait(60)
    return res["gbps"]


def torch_ok(py) -> str | None:
    r = subprocess.run([py, "-c", "import torch, torch.distributed as d; print(torch.__version__, d.is_gloo_available())"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip().endswith("True") else None


def machine() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return (f"{time.strftime('%Y-%m-%d')}, commit {commit}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"loopback, load average {os.getloadavg()[0]:.1f} at start")


def main(argv=None):
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, args = sys.argv[2], sys.argv[3:]
        if kind == "ours":
            return worker_ours(int(args[0]), json.loads(args[1]), float(args[2]), float(args[3]), args[4], args[5])
        if kind == "gloo":
            return worker_gloo(int(args[0]), int(args[1]), int(args[2]), json.loads(args[3]))
        return worker_stream(args[0], args[1], int(args[2]), int(args[3]), args[4] == "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 16, 128])
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--bucket-mb", type=float, default=BUCKET_BYTES / 2**20)
    ap.add_argument("--segment-kb", type=float, default=0, help="fixed segment size (default: a quarter of a chunk, 256 KB-4 MB)")
    ap.add_argument("--transports", nargs="+", default=["float32"],
                    help="gradient transport dtypes to time (float32 bfloat16 float16); gloo runs float32")
    ap.add_argument("--links", nargs="+", default=["tcp", "ipc", "shm"], choices=["tcp", "ipc", "shm"],
                    help="ranks on this host: the ring over loopback TCP, over Unix sockets (cluster/ring.py), or "
                         "the sum through shared memory (cluster/localsum.py: what engine-nodes on one host do)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of our configurations (best kept)")
    ap.add_argument("--torch-python", default=sys.executable)
    ap.add_argument("--notes", help="put the results at the top of this file's '## All-reduce' section")
    a = ap.parse_args(argv)
    sizes = [int(s) if float(s).is_integer() else s for s in a.sizes_mb]
    tv = torch_ok(a.torch_python)
    ceil_raw, ceil_mac = run_stream(False), run_stream(True)
    lines = [f"`./dev bench allreduce` ({machine()}; bucket {a.bucket_mb} MB, segment {f'{a.segment_kb:g} KB' if a.segment_kb else 'auto'}; ring I/O threads {io_threads()}; "
             f"torch {tv or 'not importable: gloo column empty'})", "",
             f"One raw ZeroMQ stream (PUSH->PULL, 4 MB messages): {ceil_raw:.2f} GB/s; "
             f"with HMAC-SHA256 per message on both ends: {ceil_mac:.2f} GB/s.", "",
             "| ranks | size | transport, link | ours: time | ours: bus GB/s | vs first float32 | gloo: time | gloo: bus GB/s "
             "| ours/gloo | ours/raw stream |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    transports = [tp.canonical(t) for t in a.transports]
    for n in a.ranks:
        configs = [(lk, t) for lk in a.links for t in transports]
        ours = {}
        for _ in range(a.rounds):     # interleaved rounds, the best of each: load bursts hit every config alike
            for c in configs:
                r = run_ours(n, sizes, a.bucket_mb, a.segment_kb, c[1], c[0])
                ours[c] = {mb: min(t, ours.get(c, {}).get(mb, t)) for mb, t in r.items()}
        gloo = run_gloo(a.torch_python, n, sizes) if tv else {}
        for mb in sizes:
            nbytes = mb * 2**20
            bus = lambda t: 2 * (n - 1) / n * nbytes / t / 1e9
            g = gloo.get(mb)
            for lk, t in configs:
                o, f32 = ours[lk, t][mb], ours.get((a.links[0], "float32"), {}).get(mb)
                lines.append(f"| {n} | {mb} MB | {t}, {lk} | {o * 1e3:.1f} ms | {bus(o):.2f} | "
                             + (f"{f32 / o:.2f}x | " if f32 else "- | ")
                             + (f"{g * 1e3:.1f} ms | {bus(g):.2f} | {g / o:.2f}x" if g else "- | - | -")
                             + f" | {bus(o) / ceil_raw:.2f} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if a.notes:   # newest run first under the existing heading; other sections untouched
        notes = open(a.notes).read() if os.path.exists(a.notes) else ""
        head = "\n## All-reduce\n\n"
        notes = notes.replace(head, head + text + "\n\n", 1) if head in notes else notes + head + text + "\n"
        with open(a.notes, "w") as f:
            f.write(notes)


if __name__ == "__main__":
    main()
