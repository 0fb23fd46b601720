"""All-reduce for a ring whose ranks all run on one host: through shared memory, with the
ring's ZeroMQ links carrying only two tiny signals per call (nothing pickled, no bytes of
the buffer on a socket).

Each rank owns two segments, files in /dev/shm (double-buffered: call k uses segment
k % 2, so a rank may fill one while a slower neighbour still reads the other from the
previous call).  A call:

  1. copy the buffer into my segment; signal "ready" (gathered around the ring: every
     rank hears from every other, n-1 hops of a few bytes);
  2. rank c sums chunk c of all segments in rank order (one rank, one order: the bits are
     the same on every rank) and writes the sum back into chunk c of its own segment (nobody
     else reads that chunk); signal "reduced";
  3. copy every chunk c from rank c's segment into the buffer.

Step 3 of call k and step 1 of call k+1 write different segments, and call k+2 rewrites
segment k % 2 only after every rank signalled "ready" in call k+1, i.e. finished call k.
Copies and sums run on hostpool's threads, in its fixed pieces.

Segments live as long as their owner: one that is SIGKILLed leaves its files, and the next
Segments on the host removes them (`sweep`: an owner holds a flock on each of its files).
A segment is allocated with posix_fallocate, so a full /dev/shm is an error now (the ring
is used instead) rather than a SIGBUS later.  The ring decides once per generation whether
every rank's right neighbour is on this host (ring.py's Unix socket) and /dev/shm works
(`probe`): all of them must, else everybody keeps the TCP ring.  Narrow transports do not
apply here: the sum is exact float32.
"""
from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
import time

import numpy as np

from . import hostpool

SHM_DIR = "/dev/shm"
# page tables filled at mmap time: else every first touch of a page of a 64 MB segment in
# each process that maps it is a minor fault
MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


class Segments:
    """This rank's two segments and the peers' segments it has mapped."""

    def __init__(self, endpoint: str, directory: str = SHM_DIR):
        self.dir, self.endpoint = directory, endpoint
        self.calls = 0
        self.mine: list = [None, None]      # (serial, path, mmap, nbytes) per parity
        # serials start at random: a node restarted at the same endpoint never reuses a
        # name a peer may still have mapped from its previous life
        self.serial = secrets.randbelow(1 << 30) << 8
        self.peers: dict[str, tuple] = {}   # path -> (mmap, nbytes)
        sweep(directory)

    def name(self, endpoint: str, parity: int, serial: int) -> str:
        tag = hashlib.sha256(endpoint.encode()).hexdigest()[:20]
        return os.path.join(self.dir, f"engine-ring-{tag}-{parity}-{serial}")

    def own(self, parity: int, nbytes: int):
        """(serial, float32 view) of my segment `parity`, at least nbytes large; None when
        /dev/shm cannot hold it."""
        cur = self.mine[parity]
        if cur is None or cur[3] < nbytes:
            self.serial += 1
            path = self.name(self.endpoint, parity, self.serial)
            # created under a temporary name and locked before it gets its real one, so a
            # sweep (below) never sees a live segment unlocked
            fd = os.open(path + ".new", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)        # held while this process lives
                os.posix_fallocate(fd, 0, max(4, nbytes))
                mm = mmap.mmap(fd, max(4, nbytes), flags=MAP_FLAGS)
                os.rename(path + ".new", path)
            except OSError:
                os.close(fd)
                os.unlink(path + ".new")
                return None
            if cur is not None:
                self._drop(cur)
            cur = self.mine[parity] = (self.serial, path, mm, max(4, nbytes), fd)
        return cur[0], np.frombuffer(cur[2], np.float32)

    def peer(self, endpoint: str, parity: int, serial: int, nbytes: int) -> np.ndarray:
        path = self.name(endpoint, parity, serial)
        got = self.peers.get(path)
        if got is None:
            stale = self.name(endpoint, parity, 0).rsplit("-", 1)[0] + "-"
            for p in [p for p in self.peers if p.startswith(stale)]:   # that rank grew its segment
                try:
                    self.peers.pop(p)[0].close()
                except BufferError:   # a view is still alive: the mapping goes with it
                    pass
            fd = os.open(path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                mm = mmap.mmap(fd, size, flags=MAP_FLAGS)
            finally:
                os.close(fd)
            got = self.peers[path] = (mm, size)
        if got[1] < nbytes:
            raise RuntimeError(f"{path}: {got[1]} bytes, need {nbytes}")
        return np.frombuffer(got[0], np.float32)

    @staticmethod
    def _drop(cur) -> None:
        try:
            os.unlink(cur[1])
        except OSError:
            pass
        os.close(cur[4])
        try:
            cur[2].close()
        except BufferError:   # a view is still alive somewhere: the mapping goes with it
            pass

    def new_ring(self) -> None:
        """A new ring generation: every member starts at segment 0 again, and peers'
        segments are mapped afresh (a member may be a new process at an old endpoint)."""
        self.calls = 0
        self._unmap_peers()

    def _unmap_peers(self) -> None:
        for mm, _ in self.peers.values():
            try:
                mm.close()
            except BufferError:   # a view is still alive somewhere: the mapping goes with it
                pass
        self.peers = {}

    def close(self) -> None:
        for cur in self.mine:
            if cur is not None:
                self._drop(cur)
        self.mine = [None, None]
        self._unmap_peers()


def sweep(directory: str = SHM_DIR, grace_s: float = 60.0) -> int:
    """Remove the segments of dead processes (a SIGKILLed node cannot remove its own, and
    they hold memory): a live owner keeps a shared flock on each of its segments, so one
    we can lock exclusively has no owner.  Returns how many were removed."""
    removed = 0
    try:
        names = [n for n in os.listdir(directory) if n.startswith("engine-ring-")]
    except OSError:
        return 0
    for n in names:
        path = os.path.join(directory, n)
        try:
            if n.endswith(".new"):       # died while creating it (or is creating it right now)
                if time.time() - os.stat(path).st_mtime > grace_s:
                    os.unlink(path)
                    removed += 1
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            removed += 1
        except OSError:                  # locked: its owner lives
            pass
        finally:
            os.close(fd)
    return removed


def usable(directory: str = SHM_DIR) -> bool:
    return os.path.isdir(directory) and os.access(directory, os.W_OK)


def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    hostpool.run(lambda p: np.copyto(p[0], p[1]), hostpool.split(dst, src))


def _sum_into(out: np.ndarray, parts: list[np.ndarray]) -> None:
    """out = parts[0] + parts[1] + ... in that order, element-wise; `out` may be parts[0]
    or parts[1] (each element is read before it is written), no later part."""
    def piece(p):
        o, first, *rest = p
        if rest:
            np.add(first, rest[0], out=o)
            for q in rest[1:]:
                np.add(o, q, out=o)
        else:
            np.copyto(o, first)
    hostpool.run(piece, hostpool.split(out, *parts))


def exchange(links, step: int, phase: str, b: int, k: int) -> list[tuple[int, int]]:
    """Every rank's (b, k) for this step and phase, by index of rank: each rank's tiny
    message travels once around the ring (n-1 hops)."""
    from .allreduce import PlanMismatch
    n, r = links.world, links.rank
    got = [None] * n
    got[r] = (b, k)
    links.send("chunk", {"step": step, "phase": phase, "b": b, "s": r, "k": k})
    for j in range(1, n):
        origin = (r - j) % n
        m = links.recv(f"{phase} of rank {origin} (step {step})")
        f = m.fields
        if (m.type, f["step"], f["phase"], f["s"]) != ("chunk", step, phase, origin) or m.tensors:
            raise PlanMismatch(f"{links.name}: expected {phase} of rank {origin} for step {step} from "
                               f"{links.left}, got {m.type} {f}", peer=links.left)
        if j < n - 1:
            links.forward(m)
        got[origin] = (int(f["b"]), int(f["k"]))
    return got


def enabled() -> bool:
    """ENGINE_NODE_SHM=off keeps same-host rings on their sockets (to compare, or where
    /dev/shm is shared with strangers)."""
    return os.environ.get("ENGINE_NODE_SHM", "on") != "off" and usable()


def local_ring(links, step: int) -> bool:
    """Whether every rank of this ring generation can sum through shared memory: its right
    neighbour is reached through a Unix socket (same host) and /dev/shm is usable.  Decided
    once per generation, by all ranks alike (one tiny exchange)."""
    if getattr(links, "shm_gen", None) != links.gen:
        mine = bool(links.via and links.via.startswith("ipc://") and enabled())
        links.shm_ok = all(k for _, k in exchange(links, step, "shm-probe", 0, int(mine)))
        links.shm_gen = links.gen
        if links.shm_ok and links.segments is None:
            links.segments = Segments(links.endpoint)
        elif links.shm_ok:
            links.segments.new_ring()
    return links.shm_ok


def allreduce_local(links, seg: Segments, flat: np.ndarray, step: int) -> bool:
    """Sum `flat` over the ring through shared memory, in place.  False (nothing changed,
    every rank agrees) when some rank could not allocate its segment: use the ring."""
    n, r, L = links.world, links.rank, len(flat)
    parity = seg.calls % 2
    seg.calls += 1
    own = seg.own(parity, flat.nbytes)
    if own is not None:
        serial, mine = own
        _copy(mine[:L], flat)
    got = exchange(links, step, f"shm-ready-{parity}", own[0] if own else 0, 1 if own else 0)
    if not all(k for _, k in got):
        return False
    views = [mine[:L] if j == r else seg.peer(links.peers[j], parity, got[j][0], flat.nbytes)[:L] for j in range(n)]
    bounds = [(c * L // n, (c + 1) * L // n) for c in range(n + 1)][:n]
    lo, hi = bounds[r]
    if hi > lo and r < 2:      # in place: v0 + v1 -> v_r reads each element before writing it
        _sum_into(mine[lo:hi], [v[lo:hi] for v in views])
    elif hi > lo:              # rank 2 and on: v0 + v1 would overwrite v_r before it is added
        tmp = np.empty(hi - lo, np.float32)
        _sum_into(tmp, [v[lo:hi] for v in views])
        _copy(mine[lo:hi], tmp)
    exchange(links, step, f"shm-reduced-{parity}", 0, 1)
    for c, (a, z) in enumerate(bounds):
        if z > a:
            _copy(flat[a:z], views[c][a:z])
    return True


__all__ = ["Segments", "allreduce_local", "exchange", "local_ring", "sweep", "usable"]
