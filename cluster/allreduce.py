"""Ring all-reduce (baidu-allreduce shape): agree, then reduce-scatter and all-gather.

Each bucket of the flat float32 buffer is cut into `world` chunks (chunk c covers
[c*L//N, (c+1)*L//N), so lengths need not divide), and each chunk into segments.
A segment is reduced and forwarded as soon as it arrives, so sends of one segment
overlap receives of the next (pipelining), and the last reduce-scatter step feeds the
first all-gather step directly.

All-gather messages name the chunk, not the ring step, so each rank forwards the frames
it received unchanged (zero-copy).  Messages carry no MAC: the ring's connections are
authenticated once (auth.py).  A chunk is cut into about four segments, so the next hop
starts after a quarter of it, but no segment is smaller than 256 KB or larger than 4 MB:
each message costs a fixed ~60 us of Python and ZeroMQ work (bench/NOTES.md).

Bitwise identity across ranks: every chunk is summed exactly once, by one walk around
the ring, and the all-gather copies that one result to everybody.  No rank ever adds
the same numbers in a different order.

Small buffers (at most SMALL_BYTES) skip the ring: each rank's whole buffer travels once
around it and every rank adds all of them in rank order (the same float32 additions
everywhere, so again bitwise identical).  That is n-1 hops instead of 2(n-1), for
buffers where a hop (~0.1 ms of Python and ZeroMQ) costs more than the bytes.

Ranks on one host (every rank's right neighbour reached through a Unix socket, ring.py)
sum buffers above SMALL_BYTES through shared memory instead (localsum.py): the links carry
two tiny signals per call, the bytes never touch a socket; exact float32 whatever the
transport, bitwise identical on every rank (chunk c summed by rank c in rank order).

Narrow transport (`transport="bfloat16"` or `"float16"`, transport.py): every hop sends
its float32 partial sum rounded to the narrow type, the receiver widens it and adds in
float32; the rank that completes a chunk rounds the sum once, keeps the rounded value
itself and sends it around the all-gather, so every rank still ends with the same bytes.
The gather path rounds each rank's buffer once (the sender's own copy too) and sums the
widened buffers in rank order.  Half the bytes travel for a rounding error of at most
2^-8 (bfloat16) or 2^-11 (float16) of each partial sum; the default float32 transport is
unchanged (no conversion at all).
"""
from __future__ import annotations

import numpy as np

from . import localsum
from . import transport as tp
from .ring import PeerLost, RingLinks

BUCKET_BYTES = 64 << 20
SEGMENT_BYTES = 4 << 20          # the largest segment
MIN_SEGMENT_BYTES = 256 << 10
SEGMENTS_PER_CHUNK = 4
SMALL_BYTES = 256 << 10          # at most this: gather whole buffers instead of the ring


class PlanMismatch(RuntimeError):
    """Ranks disagree on what is being reduced; moving data would corrupt it.  `peer`:
    the data endpoint of the neighbour whose plan or data did not fit ours."""

    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message)
        self.peer = peer


def pack(arrays) -> np.ndarray:
    """Concatenate float32 arrays into one fresh flat buffer (the collective mutates it)."""
    return np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays]) if len(arrays) else np.zeros(0, np.float32)


def unpack(flat: np.ndarray, shapes) -> list[np.ndarray]:
    out, off = [], 0
    for s in shapes:
        n = int(np.prod(s, dtype=np.int64))
        out.append(flat[off:off + n].reshape(s))
        off += n
    return out


def agree(links: RingLinks, step: int, sizes: list[int], dtype: str = "float32", algo: str = "ring") -> None:
    """Check the left neighbour plans the same reduction; around the ring this makes
    all ranks agree (equality is transitive).  Fails loudly naming both sides."""
    if links.world == 1:
        return
    mine = {"step": step, "sizes": list(map(int, sizes)), "dtype": dtype, "world": links.world, "algo": algo}
    links.send("plan", mine)
    theirs = links.recv(f"plan for step {step}").fields
    theirs = {k: theirs.get(k, "ring" if k == "algo" else None) for k in mine}
    if theirs != mine:
        diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
        raise PlanMismatch(f"{links.name} (rank {links.rank}) and left neighbour {links.left} "
                           f"disagree on the all-reduce of step {step}: (ours, theirs) = {diff}", peer=links.left)


def _segments(lo: int, hi: int, seg: int):
    return [(a, min(a + seg, hi)) for a in range(lo, hi, seg)]


def segment_elems(bucket_elems: int, world: int, itemsize: int = 4, largest: int = SEGMENT_BYTES) -> int:
    """Elements per segment for one bucket: a quarter of a chunk, within [256 KB, `largest`]."""
    chunk_bytes = bucket_elems * itemsize // max(1, world)
    return max(1, min(largest, max(MIN_SEGMENT_BYTES, chunk_bytes // SEGMENTS_PER_CHUNK)) // itemsize)


def _bucket(links: RingLinks, buf: np.ndarray, step: int, b: int, seg: int, transport: str = "float32") -> None:
    n, r, L = links.world, links.rank, len(buf)
    chunk = [_segments(c * L // n, (c + 1) * L // n, seg) for c in range(n)]
    narrow = transport != "float32"
    wdt = tp.wire_dtype(transport)

    def recv(phase, s, k, lo, hi):
        m = links.recv(f"{phase} segment (step {step}, bucket {b}, ring step {s}, seg {k})")
        f = m.fields
        if (m.type, f["step"], f["phase"], f["b"], f["s"], f["k"]) != ("chunk", step, phase, b, s, k) \
                or len(m.tensors) != 1 or m.tensors[0].shape != (hi - lo,) or m.tensors[0].dtype != wdt:
            raise PlanMismatch(f"{links.name}: expected {phase} step {step} bucket {b} ring step {s} "
                               f"seg {k} of {hi - lo} {transport} from {links.left}, got {m.type} {f}", peer=links.left)
        return m

    def send(phase, s, k, lo, hi):
        # float32: zero-copy from buf; narrow: a fresh array, which the frame keeps alive
        links.send("chunk", {"step": step, "phase": phase, "b": b, "s": s, "k": k},
                   [tp.narrow(buf[lo:hi], transport) if narrow else buf[lo:hi]])

    for k, (lo, hi) in enumerate(chunk[r]):
        send("rs", 0, k, lo, hi)
    for s in range(n - 1):                       # reduce-scatter
        for k, (lo, hi) in enumerate(chunk[(r - s - 1) % n]):
            got = recv("rs", s, k, lo, hi).tensors[0]
            if narrow:
                tp.add_into(buf[lo:hi], got, transport)
            else:
                np.add(buf[lo:hi], got, out=buf[lo:hi])
            if s < n - 2:
                send("rs", s + 1, k, lo, hi)
            elif narrow:                         # chunk r+1 is complete: round it once, keep what we send
                w = tp.narrow(buf[lo:hi], transport)
                links.send("chunk", {"step": step, "phase": "ag", "b": b, "s": (r + 1) % n, "k": k}, [w])
                tp.widen_into(w, transport, buf[lo:hi])
            else:                                # chunk r+1 is complete: start the all-gather
                send("ag", (r + 1) % n, k, lo, hi)
    for s in range(n - 1):                       # all-gather ("s" is the chunk index here)
        c = (r - s) % n
        for k, (lo, hi) in enumerate(chunk[c]):
            m = recv("ag", c, k, lo, hi)
            if s < n - 2:
                links.forward(m)
            if narrow:
                tp.widen_into(m.tensors[0], transport, buf[lo:hi])
            else:
                buf[lo:hi] = m.tensors[0]


def _gather_sum(links: RingLinks, buf: np.ndarray, step: int, transport: str = "float32") -> None:
    n, r = links.world, links.rank
    parts = [None] * n
    # a copy goes out (narrow: the rounded one, which is also what we add ourselves): the
    # sum is written into buf, possibly before ZeroMQ has sent it
    mine = tp.narrow(buf, transport)
    parts[r] = mine
    wdt = mine.dtype
    links.send("chunk", {"step": step, "phase": "gs", "b": 0, "s": r, "k": 0}, [mine])
    for j in range(1, n):
        origin = (r - j) % n
        m = links.recv(f"whole buffer of rank {origin} (step {step})")
        f = m.fields
        if (m.type, f["step"], f["phase"], f["s"]) != ("chunk", step, "gs", origin) or len(m.tensors) != 1 \
                or m.tensors[0].shape != buf.shape or m.tensors[0].dtype != wdt:
            raise PlanMismatch(f"{links.name}: expected the whole buffer of rank {origin} for step {step} "
                               f"({len(buf)} {transport}) from {links.left}, got {m.type} {f}", peer=links.left)
        if j < n - 1:
            links.forward(m)
        parts[origin] = m.tensors[0]      # a view that keeps its ZeroMQ frame alive
    total = tp.widen(parts[0], transport)   # a float32 copy (exactly widened when narrow)
    for p in parts[1:]:
        tp.add_into(total, p, transport)
    buf[:] = total


def allreduce(links: RingLinks, flat: np.ndarray, step: int, *, bucket_bytes: int = BUCKET_BYTES,
              segment_bytes: int | None = None, small_bytes: int = SMALL_BYTES,
              transport: str = "float32", exact_tail: int = 0) -> np.ndarray:
    """Sum `flat` (float32, 1-D, owned by the caller and not reused while in flight)
    over the ring in place; returns it.  `segment_bytes` fixes the segment size (bytes on
    the wire) instead of deriving it from the chunk (segment_elems); buffers of at most
    `small_bytes` (float32 bytes) are gathered whole (0: always the ring).  `transport`:
    "float32" (default), "bfloat16" or "float16" ("bf16", "fp16"), the type partial sums
    travel in, accumulated in float32 (transport.py); every rank must pass the same one.
    `exact_tail`: with a narrow transport, the last that many elements (a loss, a vote packed
    behind the gradients) are summed in float32 all the way, by a second, small collective.
    With one rank nothing travels and `flat` is returned unchanged.  Raises PeerLost or
    PlanMismatch."""
    if flat.dtype != np.float32 or flat.ndim != 1 or not flat.flags.c_contiguous:
        raise TypeError("allreduce wants a contiguous 1-D float32 buffer")
    transport = tp.canonical(transport)
    if exact_tail and transport != "float32":
        if not 0 < exact_tail <= len(flat):
            raise ValueError(f"exact_tail {exact_tail} is not within the buffer's {len(flat)} elements")
        kw = dict(bucket_bytes=bucket_bytes, segment_bytes=segment_bytes, small_bytes=small_bytes)
        cut = len(flat) - exact_tail
        allreduce(links, flat[:cut], step, transport=transport, **kw)
        allreduce(links, flat[cut:], step, transport="float32", **kw)
        return flat
    small = flat.nbytes <= small_bytes
    if links.world > 1 and not small and localsum.local_ring(links, step):   # one host: shared memory
        agree(links, step, [len(flat)], dtype=transport, algo="shm")
        if localsum.allreduce_local(links, links.segments, flat, step):
            return flat                   # else some rank's /dev/shm was full: all fall back together
    agree(links, step, [len(flat)], dtype=transport, algo="gather" if small else "ring")
    if links.world == 1:
        return flat
    if small:
        _gather_sum(links, flat, step, transport)
        return flat
    per_bucket = max(1, bucket_bytes // 4)
    isz = tp.wire_dtype(transport).itemsize
    for b, lo in enumerate(range(0, len(flat), per_bucket)):
        part = flat[lo:lo + per_bucket]
        seg = max(1, segment_bytes // isz) if segment_bytes else segment_elems(len(part), links.world, isz)
        _bucket(links, part, step, b, seg, transport)
    return flat


__all__ = ["allreduce", "agree", "pack", "unpack", "PlanMismatch", "PeerLost"]
