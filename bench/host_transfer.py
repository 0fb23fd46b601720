"""Device <-> host bandwidth through OpenCL for the ways a node can hold its gradients on
the host (issue 14: a GPU node downloads every gradient and uploads the reduced sum each
step), side by side in one run:

    python -m bench.host_transfer [--device nvidia] [--mb 80] [--repeat 10]

  pageable   a numpy array (the driver stages through its own pinned memory)
  mapped     an ALLOC_HOST_PTR buffer kept mapped, read into / written from its mapping
             (what cluster/devicetrain.py's host_array does today)
  copy+map   clEnqueueCopyBuffer between the device buffer and an ALLOC_HOST_PTR buffer,
             the host reading the latter's mapping (the copy is a device-side DMA)
  pieces     mapped, in 8 pieces of MB/8 each, all enqueued before one wait (the shape an
             overlapped download takes)
  shm        a numpy view of a file in /dev/shm (what a same-host ring's segments are:
             cluster/shmstream.py), read into / written from directly
  shm+ptr    a USE_HOST_PTR buffer over that same /dev/shm mapping: a device-side copy
             into / out of it, then a map and unmap so the host sees it (if the driver
             pins the pages, the copy is a DMA into shared memory)

Prints GB/s per direction (best of --repeat), and the device time of each transfer.
"""
from __future__ import annotations

import argparse
import mmap
import os
import tempfile
import time

import numpy as np
import pyopencl as cl

import engine
from bench.common import header


def _best(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--mb", type=float, default=80.0)
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args(argv)
    dev = engine.runtime.get_device(a.device)
    print(header(dev))
    ctx, q = dev.context, dev.queue
    n = int(a.mb * 2**20) // 4
    mf = cl.mem_flags
    src = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dbuf = cl.Buffer(ctx, mf.READ_WRITE, 4 * n)
    cl.enqueue_copy(q, dbuf, src, is_blocking=True)
    pageable = np.empty(n, np.float32)
    hbuf = cl.Buffer(ctx, mf.READ_WRITE | mf.ALLOC_HOST_PTR, 4 * n)
    mapped, _ = cl.enqueue_map_buffer(q, hbuf, cl.map_flags.READ | cl.map_flags.WRITE, 0, (n,), np.float32,
                                      is_blocking=True)
    pieces = 8
    cut = [i * n // pieces for i in range(pieces + 1)]

    def plain(host):
        """(download, upload) between the device buffer and `host` by plain blocking copies."""
        return (lambda: cl.enqueue_copy(q, host, dbuf, is_blocking=True),
                lambda: cl.enqueue_copy(q, dbuf, host, is_blocking=True))

    def right(down, up, host) -> tuple[bool, bool]:
        """Whether `down` puts the device's data into `host` and `up` takes what the host
        wrote there to the device (which then holds `src` again)."""
        host[:] = 0
        down()
        got = np.array_equal(host, src)
        host[:] = src[::-1]
        up()
        back = np.empty(n, np.float32)
        cl.enqueue_copy(q, back, dbuf, is_blocking=True)
        cl.enqueue_copy(q, dbuf, src, is_blocking=True)
        return got, np.array_equal(back, src[::-1])

    def down_copy():
        cl.enqueue_copy(q, hbuf, dbuf, byte_count=4 * n)
        q.finish()

    def up_copy():
        cl.enqueue_copy(q, dbuf, hbuf, byte_count=4 * n)
        q.finish()

    def down_pieces():
        for lo, hi in zip(cut, cut[1:]):
            cl.enqueue_copy(q, mapped[lo:hi], dbuf, src_offset=4 * lo, is_blocking=False)
        q.finish()

    def up_pieces():
        for lo, hi in zip(cut, cut[1:]):
            cl.enqueue_copy(q, dbuf, mapped[lo:hi], dst_offset=4 * lo, is_blocking=False)
        q.finish()

    fd, path = tempfile.mkstemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.posix_fallocate(fd, 0, 4 * n)
    shm = np.frombuffer(mmap.mmap(fd, 4 * n, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)), np.float32)
    os.close(fd)
    os.unlink(path)
    ubuf = None

    def down_ptr():
        cl.enqueue_copy(q, ubuf, dbuf, byte_count=4 * n)
        view, _ = cl.enqueue_map_buffer(q, ubuf, cl.map_flags.READ, 0, (n,), np.float32, is_blocking=True)
        view.base.release(q)
        q.finish()

    def up_ptr():
        view, _ = cl.enqueue_map_buffer(q, ubuf, cl.map_flags.WRITE, 0, (n,), np.float32, is_blocking=True)
        view.base.release(q)
        cl.enqueue_copy(q, dbuf, ubuf, byte_count=4 * n)
        q.finish()

    print(f"| {a.mb:g} MB | download GB/s | upload GB/s |")
    print("|---|---|---|")
    for name, down, up in (("pageable", *plain(pageable)), ("mapped", *plain(mapped)),
                           ("copy+map", down_copy, up_copy), ("pieces (mapped)", down_pieces, up_pieces),
                           ("shm", *plain(shm)), ("shm+ptr", down_ptr, up_ptr),
                           ("shm, a USE_HOST_PTR buffer over it alive", *plain(shm))):
        if name == "shm+ptr":
            ubuf = cl.Buffer(ctx, mf.READ_WRITE | mf.USE_HOST_PTR, hostbuf=shm)
        d, u = _best(down, a.repeat), _best(up, a.repeat)
        print(f"| {name} | {4 * n / d / 1e9:.1f} | {4 * n / u / 1e9:.1f} |", flush=True)
    down_ok, up_ok = right(*plain(shm), shm)
    print(f"shm, plain copies: download right {down_ok}, upload right {up_ok}")
    down_copy()
    ok = np.array_equal(mapped, src)
    print(f"copy+map holds the device's data: {ok}")
    down_ok, up_ok = right(down_ptr, up_ptr, shm)
    print(f"shm+ptr: the /dev/shm mapping holds the device's data after the map: {down_ok}")
    print(f"shm+ptr: the device got what the host wrote into the mapping: {up_ok}")


if __name__ == "__main__":
    main()
