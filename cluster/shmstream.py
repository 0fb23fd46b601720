"""A streamed all-reduce for rings whose ranks all run on one host: the gradient buffer is
summed piece by piece through shared memory while the device still produces the rest,
with no message on the ring per piece or per step.

localsum.py sums a whole buffer per call, with two ring-wide signals (about 1 ms of
ZeroMQ and Python each time) and a plan check: cut into pieces that backward hands over
one by one, that cost was paid per piece and made an overlapped step slower than a plain
one (bench/NOTES.md, "a pipelined overlap tried").  Here the ranks agree once per ring
generation on a plan (the pieces, from the parameter sizes alone, so ranks with different
batch shares agree) and map each other's segments; after that, a rank publishes a piece
by writing a ticket (the call's number) into its segment's header, and waits for a piece
by reading the other ranks' tickets.

Each rank owns two segments (call k uses k % 2).  A segment is a header (one uint64
ticket per piece, then the rank's weight of the call), then the buffer.  For each piece,
in plan order, a rank puts its values of the piece into its segment and writes the
ticket (`publish`), then waits for every rank's ticket of that piece (`wait`) and reads
the piece from all segments.  Two ways to fill and read:

  * on the devices (every rank a DeviceTrainer, `Stream.on_device`): the device downloads
    straight into the segment and uploads the other ranks' pieces from theirs (DMA; see
    DeviceTrainer.streamed_step), then sums w_0 g_0 + w_1 g_1 + ... in rank order.  The
    host publishes its pieces as they land and takes each piece once every rank's ticket
    of it is in (`ready`), each side as far as it can go, not piece by piece in lockstep;
  * on the host (`Stream.allreduce`): copy in, then add all segments in rank order into
    the caller's buffer (the same float32 additions on every rank: the same bits).

Every rank reads the whole piece of every segment, where localsum's reduce-scatter reads
less but needs a second signal: on the hosts this is for (2-8 GPUs) one signal per piece
is what pays.  Call k + 2 rewrites segment k % 2 only after this rank saw every rank's
tickets of call k + 1, which each wrote after finishing its reads of call k (a device
rank's pieces of call k + 1 are copied behind a barrier on its uploads of call k).

Stores become visible in program order (the ticket after the data) on x86-64; the host
copies run on hostpool's threads, whose hand-over is a lock, and a device's download is
waited for before the ticket is written: the data is there before the ticket on any host
we run on.  A rank that dies or stops mid-step leaves a ticket unwritten: the waiter
gives up after the ring's timeout (PeerLost, as a silent socket would), or at once when
the node is cancelled or its left neighbour says goodbye.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from . import hostpool, localsum
from .allreduce import PlanMismatch, agree
from .ring import PeerLost

HEADER_ALIGN = 4096              # bytes: the buffer starts on its own page
log = logging.getLogger(__name__)


def plan(sizes: list[int], cap: int, order: list[int] | None = None) -> list[tuple[int, int]]:
    """Pieces of a packed buffer of parameters (`sizes`, in packing order), taken in
    `order` (the order backward finishes them; default: last parameter first): a
    parameter next in order and beside the current piece in the buffer joins it up to
    `cap` elements, a larger one is cut into pieces of `cap`.  Each piece is a contiguous
    [lo, hi)."""
    offs = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
    out, cur = [], None
    cap = max(1, int(cap))
    for i in (reversed(range(len(sizes))) if order is None else order):
        a, b = offs[i], offs[i + 1]
        if b == a:
            continue
        if cur is not None and (a == cur[1] or b == cur[0]) and max(b, cur[1]) - min(a, cur[0]) <= cap:
            cur = [min(a, cur[0]), max(b, cur[1])]
            continue
        if cur is not None:
            out.append(tuple(cur))
            cur = None
        if b - a <= cap:
            cur = [a, b]
        else:
            out.extend((lo, min(lo + cap, b)) for lo in range(a, b, cap))
    if cur is not None:
        out.append(tuple(cur))
    return out


def _order_of_rank0(links, step: int, order: list[int]) -> list[int]:
    """Rank 0's order of the parameters, passed around the ring once: every rank cuts the
    same pieces, even where another batch size made its own program finish them in
    another order (a rank then waits a little longer for some piece, nothing worse)."""
    if links.rank == 0:
        links.send("plan", {"step": step, "sizes": list(order), "dtype": "float32", "world": links.world,
                            "algo": "stream-order"})
        return list(order)
    m = links.recv(f"rank 0's order of the gradients (step {step})")
    if m.type != "plan" or m.fields.get("algo") != "stream-order" or m["step"] != step \
            or sorted(m["sizes"]) != sorted(order):
        raise PlanMismatch(f"{links.name}: expected rank 0's order of {len(order)} gradients for step {step} "
                           f"from {links.left}, got {m.type} {m.fields}", peer=links.left)
    if links.rank < links.world - 1:
        links.forward(m)
    return [int(i) for i in m["sizes"]]


class Stream:
    """One ring generation's streamed all-reduce of a buffer of `length` floats cut into
    `pieces`.  Made by `stream_for` on every rank at the same step.  `on_device`: every
    rank sums on its device (DeviceTrainer.streamed_step) rather than on the host."""

    def __init__(self, links, pieces: list[tuple[int, int]], length: int, on_device: bool = False,
                 narrow: bool = False):
        self.links, self.pieces, self.length, self.on_device = links, list(pieces), int(length), on_device
        self.narrow = narrow     # the devices send bfloat16 values (2 bytes, packed from the start)
        self.calls, self.views = 0, [None, None]
        # a ticket per piece, then this rank's weight of the call
        self.hwords = -(-8 * (len(self.pieces) + 1) // HEADER_ALIGN) * HEADER_ALIGN // 8
        self.segs = localsum.Segments(links.endpoint)

    def _split(self, f32: np.ndarray):
        head = 2 * self.hwords
        return f32[:head].view(np.uint64), f32[head:head + self.length]

    def setup(self, step: int) -> bool:
        links, nbytes = self.links, 8 * self.hwords + 4 * self.length
        own = [self.segs.own(p, nbytes) for p in (0, 1)]
        if all(own):
            for _, f32 in own:
                self._split(f32)[0][:] = 0     # a reused file may hold an earlier run's tickets
        # serial 0: my /dev/shm is full; a rank's tickets are zero before its message leaves,
        # so nobody can read a stale ticket once it has heard from everybody
        got = localsum.exchange(links, step, "stream-segments", *(o[0] if all(own) else 0 for o in own))
        if not all(a and b for a, b in got):
            self.close()
            return False
        for p in (0, 1):
            self.views[p] = [self._split(own[p][1] if j == links.rank else
                                         self.segs.peer(links.peers[j], p, got[j][p], nbytes))
                             for j in range(links.world)]
        return True

    # --- the steps of a call, for callers that move the bytes themselves (a device's DMA) ---
    def begin(self, weight: float = 1.0) -> tuple[int, list]:
        """Start the next call: its ticket and the (header, buffer) of every rank's segment
        for it, by rank; this rank's `weight` is published with its first piece."""
        self.calls += 1
        t, views = self.calls, self.views[self.calls % 2]
        views[self.links.rank][0][len(self.pieces)] = np.float32(weight).astype(np.float64).view(np.uint64)
        return t, views

    def publish(self, views, p: int, t: int) -> None:
        """Piece p of this rank's segment holds its values for call t."""
        views[self.links.rank][0][p] = t

    def weights(self, views) -> list[float]:
        """Every rank's weight of the call (valid once its first piece is published)."""
        return [float(h[len(self.pieces):len(self.pieces) + 1].view(np.float64)[0]) for h, _ in views]

    def allreduce(self, flat: np.ndarray, step: int) -> None:
        """flat[:length] summed over the ring in place on the host, piece by piece."""
        t, views = self.begin()
        head, data = views[self.links.rank]
        for p, (lo, hi) in enumerate(self.pieces):
            hostpool.run(lambda q: np.copyto(q[0], q[1]), hostpool.split(data[lo:hi], flat[lo:hi]))
            self.publish(views, p, t)
            self.wait(views, p, t, step)
            localsum._sum_into(flat[lo:hi], [d[lo:hi] for _, d in views])

    def ready(self, views, p: int, t: int) -> bool:
        """Whether every rank has published piece p of call t."""
        return all(h[p] >= t for h, _ in views)

    def wait(self, views, p: int, t: int, step: int) -> None:
        """Until every rank published piece p of call t."""
        self.until(lambda: self.ready(views, p, t), f"piece {p} of step {step} through shared memory",
                   lambda: next((j for j, (h, _) in enumerate(views) if h[p] < t), None))

    def until(self, done, what: str, late=None, longest: float = 1e-3) -> None:
        """Until done() is true, polled: 50 spins, then sleeps that double up to `longest`
        seconds (a peer this late is computing: stop taking its CPU).  A cancel or the left
        neighbour's goodbye ends the wait at once (RingLinks.check); after the ring's
        timeout it raises PeerLost, naming the rank late() says is late."""
        if done():
            return
        links = self.links
        deadline = time.monotonic() + links.timeout_s
        spins, pause, look = 0, 0.0, 0.0
        while True:
            if done():
                return
            now = time.monotonic()
            if now >= look:
                links.check(what)
                look = now + 0.01
            if now > deadline:
                j = late() if late else None
                who = f"rank {j} ({links.peers[j]}) did not write" if j is not None else "no progress on"
                raise PeerLost(f"{links.name}: {who} {what} for {links.timeout_s:.1f}s "
                               f"(rank {links.rank}/{links.world}, gen {links.gen})")
            spins += 1
            if spins > 50:
                pause = min(longest, max(2e-5, 2 * pause))
            time.sleep(pause)

    def close(self) -> None:
        self.views = [None, None]
        self.segs.close()


def stream_for(links, step: int, cap_bytes: int, length: int, sizes: list[int],
               order: list[int] | None = None, on_device: bool = False, narrow: bool = False) -> Stream | None:
    """This generation's Stream for a packed buffer of `length` floats (parameters of
    `sizes`, then a tail), or None: every rank of the ring calls it at the same step.
    Decided once per generation, by all ranks together: a stream when every rank asks
    for one (`cap_bytes` > 0) and sums through shared memory (localsum.local_ring); the
    pieces are cut at the smallest rank's cap, in rank 0's `order` of the parameters
    (default: last first); the sum runs on the devices when every rank can (`on_device`).
    `narrow`: the job's transport is bfloat16, which only devices stream (each packs its
    gradients to 2 bytes a value before they go down); otherwise no stream."""
    have = links.stream                   # dropped by links.connect: a new ring decides again
    if have is not None and (have[0], have[1]) == (links.gen, length):
        return have[2]
    links.drop_stream()
    links.stream = (links.gen, length, None)
    if links.world < 2 or not localsum.local_ring(links, step):
        return None
    # each rank's cap, and whether it sums on its device (bit 0) and asks for bfloat16 (bit 1)
    got = localsum.exchange(links, step, "stream-cap", max(0, int(cap_bytes)), int(on_device) | int(narrow) << 1)
    caps, devices, narrows = [c for c, _ in got], [k & 1 for _, k in got], [k >> 1 & 1 for _, k in got]
    if min(caps) <= 0 or (narrow and not all(devices)):   # bfloat16 pieces: devices only
        return None
    if len(set(narrows)) != 1:
        raise PlanMismatch(f"{links.name}: ranks disagree on bfloat16 pieces ({narrows})")
    default = list(reversed(range(len(sizes))))
    order = _order_of_rank0(links, step, default if order is None or sorted(order) != sorted(default) else order)
    pieces = plan(sizes, min(caps) // 4, order)
    tail = sum(sizes)
    if tail < length:
        pieces.append((tail, length))     # the loss and the halt vote: after every gradient
    # every rank cut the same pieces (checked), else none of them streams
    agree(links, step, [length, *(x for pc in pieces for x in pc)], algo="stream")
    s = Stream(links, pieces, length, on_device=all(devices), narrow=narrow)
    if s.setup(step):
        links.stream = (links.gen, length, s)
        log.info("ring gen %d: all-reduce streamed through shared memory, %d pieces of at most %d floats, "
                 "summed on the %s%s", links.gen, len(pieces), min(caps) // 4, "devices" if s.on_device else "host",
                 " (bfloat16 values)" if narrow else "")
        return s
    return None


__all__ = ["Stream", "plan", "stream_for"]
