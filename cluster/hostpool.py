"""A node's per-step host work (optimizer update, rollback copy, weights checksum) split
into fixed pieces and run on a few threads.

numpy's element-wise loops release the GIL on large buffers, so on a
multi-core host this takes a fraction of the single-thread time (bench/NOTES.md,
"rest" of a step).  The pieces are fixed by size, never by the thread count, so every
result, checksums included, is the same on every node whatever its core count.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PIECE = 1 << 18          # elements per piece (1 MB of float32): big enough to amortise a task
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


# threads for a call over fewer / at least BIG elements when ENGINE_NODE_HOST_THREADS is not
# set: on a 32-core host with two H200 nodes, the big MLP's 80 MB all-reduce step was 12-16 %
# faster on 8 threads than on 4 in three runs, the small MLP's 7.5 MB one 0-12 % slower
# (bench/NOTES.md)
THREADS, BIG_THREADS, BIG = 4, 8, 1 << 23


def threads(elems: int = 0) -> int:
    """Threads for a call over ``elems`` elements: ENGINE_NODE_HOST_THREADS, else THREADS
    (BIG_THREADS from BIG elements on), never more than the CPUs this process may run on:
    a node pinned with `engine-node --cpus` (sched_setaffinity) counts its own CPUs, not
    the host's."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # no affinity call (macOS)
        n = os.cpu_count() or 1
    try:
        cap = int(os.environ.get("ENGINE_NODE_HOST_THREADS", "") or (BIG_THREADS if elems >= BIG else THREADS))
    except ValueError:
        raise ValueError(f"ENGINE_NODE_HOST_THREADS={os.environ['ENGINE_NODE_HOST_THREADS']!r} is not a "
                         f"number of threads") from None
    return max(1, min(cap, n))


def pieces(n: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + PIECE, n)) for lo in range(0, n, PIECE)] or [(0, 0)]


def run(fn, items) -> list:
    """fn(item) for every item of split()'s pieces, in order, at most threads(their elements)
    at once; on the pool when they hold at least two pieces' worth of elements (below that,
    handing out tasks costs more than it saves: the digits MLP's 17 k weights lost 1 ms a
    step)."""
    items = list(items)
    total = sum(piece[0].size for piece in items)
    k = threads(total)
    if k == 1 or total < 2 * PIECE:
        return [fn(x) for x in items]
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(threads(BIG), thread_name_prefix="host-work")
    if k >= _pool._max_workers:
        return list(_pool.map(fn, items))
    out = [None] * len(items)

    def share(j):       # every k-th item: k tasks, so at most k threads work on this call
        for i in range(j, len(items), k):
            out[i] = fn(items[i])
    list(_pool.map(share, range(k)))
    return out


def split(*arrays) -> list[tuple]:
    """Pieces of equally shaped arrays: [(a[lo:hi], b[lo:hi], ...)] over their flat views."""
    if not all(a.flags.c_contiguous for a in arrays):
        raise ValueError("hostpool works on contiguous arrays (a flat view must not be a copy)")
    flats = [a.reshape(-1) for a in arrays]
    return [tuple(f[lo:hi] for f in flats) for lo, hi in pieces(flats[0].size)]


def copy(arrays: list[np.ndarray]) -> list[np.ndarray]:
    out = [np.empty_like(a) for a in arrays]
    run(lambda pair: np.copyto(pair[1], pair[0]), [p for a, o in zip(arrays, out) for p in split(a, o)])
    return out


def weights_checksum(arrays: list[np.ndarray]) -> str:
    """The weights' checksum nodes compare (kernels/checksum.cl.mako computes the same on a
    device): the sum over the arrays' elements, numbered across all of them, of each
    float32's bits times (2 i + 1), modulo 2^64, as 16 hex digits."""
    def piece(item):
        chunk, first = item
        w = np.arange(first, first + chunk.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        return int(np.multiply(chunk, w, dtype=np.uint64).sum(dtype=np.uint64))
    items, base = [], 0
    for a in arrays:
        bits = np.ascontiguousarray(a, np.float32).reshape(-1).view(np.uint32)
        items += [(bits[lo:hi], base + lo) for lo, hi in pieces(bits.size)]
        base += bits.size
    total = sum(run(piece, items))
    return f"{total % (1 << 64):016x}"


def all_finite(flat: np.ndarray) -> bool:
    """No NaN or Inf in `flat`.  A piece whose sum is finite holds only finite values
    (NaN and Inf propagate through a sum), so only a suspect piece is scanned value by
    value (a sum can also overflow to Inf from finite values: that scan tells)."""
    return all(run(lambda p: bool(np.isfinite(p[0].sum())) or bool(np.isfinite(p[0]).all()), split(flat)))
