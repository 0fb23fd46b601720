"""A rank's two links in the ring: a bound PULL it receives on from its left
neighbour, and a PUSH connected to its right neighbour.

Authentication is per connection (auth.py): the PULL admits only a PUSH that presents
a fresh token made with the cluster secret, so ring messages carry no MAC and a
stranger's connection delivers nothing.

Same host, no TCP: the PULL also binds a Unix socket (ZeroMQ ipc://) whose path is derived
from its advertised TCP endpoint (local_path), and a PUSH whose right neighbour has that
socket on this machine connects through it instead of loopback TCP (less kernel work per
byte: bench/NOTES.md).  Only a process on this host can have bound that path for that
endpoint, so a peer on another host is never mistaken for a local one; the connection is
authenticated exactly as over TCP (the token names the TCP endpoint either way).

Every message carries the ring generation `gen`; after the ring re-forms (a node died
or joined) leftovers from the old ring are dropped instead of being mistaken for data.
Receives wait in short slices so an abort from the node's control thread, or a `bye`
from a neighbour that is shutting down, ends a collective within ~50 ms.
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import hashlib
import os
import socket
import stat
import tempfile
import threading
import time

import zmq

from . import auth, wire

POLL_MS = 50


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Ask glibc to recycle freed blocks instead of returning them to the kernel.

    libzmq mallocs a fresh buffer for every message it receives.  With glibc's defaults
    the freed space is handed back (munmap, madvise) and the next message page-faults
    its memory in again, zeroed: that cost a fifth to a quarter of the ring's bandwidth
    (bench/NOTES.md, "## All-reduce").  Blocks below `mmap_threshold` now come from the
    heap and up to `trim_threshold` of free heap is kept.  Process-wide and harmless
    for correctness; a no-op (False) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError, TypeError):
        return False


IO_THREADS = 2


def context() -> zmq.Context:
    """A context whose two I/O threads let a rank receive from its left neighbour while
    it sends to its right one: with one thread both directions' kernel copies queue behind
    each other and a link carries about half of what one TCP stream can
    (bench/NOTES.md, "## All-reduce")."""
    return zmq.Context(io_threads=IO_THREADS)


def _pin(sock: zmq.Socket, ctx: zmq.Context, thread: int) -> None:
    """Put `sock`'s I/O on `thread` (bit mask ZMQ_AFFINITY); a context with fewer
    threads keeps libzmq's choice, as a mask naming no existing thread is invalid."""
    if ctx.get(zmq.IO_THREADS) > thread:
        sock.setsockopt(zmq.AFFINITY, 1 << thread)


def local_dir() -> str:
    """Where same-host ring sockets live: ENGINE_NODE_IPC_DIR, else the temp directory;
    ENGINE_NODE_IPC_DIR=off: no Unix sockets (loopback TCP between local ranks)."""
    return os.environ.get("ENGINE_NODE_IPC_DIR") or tempfile.gettempdir()


def local_path(endpoint: str, directory: str | None = None) -> str | None:
    """The Unix socket path a node that advertises TCP `endpoint` binds on this host
    (None: same-host sockets are off)."""
    directory = directory or local_dir()
    if directory == "off":
        return None
    return os.path.join(directory, "engine-ring-" + hashlib.sha256(endpoint.encode()).hexdigest()[:20] + ".sock")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _is_listening(path: str) -> bool:
    """Whether a live socket listens at ``path``: a SIGKILLed node leaves its socket file
    behind, and a later node handed the same TCP port (ports are reused) would otherwise
    connect its PUSH to the dead file, where ZeroMQ queues the messages forever."""
    if not _is_socket(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class PeerLost(RuntimeError):
    """The ring cannot make progress: a neighbour left, went silent, or we were told to abort."""


class RingLinks:
    def __init__(self, ctx: zmq.Context, bind: str, secret: bytes, *, name: str = "node",
                 cancel: threading.Event | None = None, timeout_s: float = 30.0):
        self.secret, self.name, self.timeout_s = secret, name, timeout_s
        keep_freed_memory()
        self.cancel = cancel or threading.Event()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.MAXMSGSIZE, wire.SOCKET_MAX_FRAME)      # no larger frame is read, even pre-auth
        self.pull.setsockopt(zmq.HANDSHAKE_IVL, 5000)                 # a silent stranger is dropped
        self.pull.setsockopt(zmq.RCVHWM, 0)
        _pin(self.pull, ctx, 0)
        self.domain = f"ring-{id(self)}"
        self.gate = auth.Gate(secret, lambda: self.endpoint)
        auth.ZapHandler.register(ctx, self.domain, self.gate)     # before the first peer can knock
        self.pull.setsockopt(zmq.PLAIN_SERVER, 1)
        self.pull.setsockopt_string(zmq.ZAP_DOMAIN, self.domain)
        try:
            self.pull.bind(bind)
        except zmq.ZMQError:
            self.pull.close(linger=0)
            auth.ZapHandler.unregister(ctx, self.domain)   # else the context could never terminate
            raise
        self.endpoint = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.ctx, self.push = ctx, None
        self.local = None          # the Unix socket path bound beside the TCP endpoint (bind_local)
        self.via = None            # the endpoint the PUSH connected to (ipc:// for a same-host neighbour)
        self.segments = None       # shared-memory segments of a ring on one host (localsum.py)
        self.shm_gen, self.shm_ok = None, False
        self.stream = None         # (gen, length, shmstream.Stream or None): this generation's streamed sum
        self.gen, self.rank, self.world, self.peers = -1, 0, 1, [self.endpoint]
        self.dropped = 0          # stale or malformed messages we threw away
        self.held = collections.deque()   # messages check() read ahead of recv
        self.bytes_sent = 0

    def bind_local(self, directory: str | None = None) -> str | None:
        """Also accept same-host neighbours on a Unix socket named after the advertised
        endpoint (call after the endpoint is final).  Returns its path, or None when
        same-host sockets are off or the directory is not usable."""
        path = local_path(self.endpoint, directory)
        if path is None or self.local == path:
            return self.local
        try:
            self.pull.bind("ipc://" + path)      # replaces a stale file of a dead node at that endpoint
        except zmq.ZMQError:
            return None                          # e.g. a read-only directory: TCP still works
        self.local = path
        return path

    def connect(self, gen: int, rank: int, peers: list[str]) -> None:
        """Join ring generation `gen` as `rank`; peers[i] is rank i's data endpoint."""
        if self.push is not None:
            self.push.close(linger=0)   # whatever was queued for the old ring is obsolete
            self.push = None
        self.held.clear()
        # what was decided with the old ring is decided again (a new driver numbers its
        # generations from the start: a number alone does not tell two rings apart)
        self.shm_gen = None
        self.drop_stream()
        self.gen, self.rank, self.world, self.peers = gen, rank, len(peers), list(peers)
        if self.world > 1:
            self.push = self.ctx.socket(zmq.PUSH)
            self.push.setsockopt(zmq.SNDHWM, 0)
            self.push.setsockopt(zmq.LINGER, 0)
            _pin(self.push, self.ctx, 1)
            auth.client(self.push, self.secret, self.endpoint, self.right)
            near = local_path(self.right)
            self.via = "ipc://" + near if near and _is_listening(near) else self.right
            self.push.connect(self.via)

    @property
    def left(self) -> str:
        return self.peers[(self.rank - 1) % self.world]

    @property
    def right(self) -> str:
        return self.peers[(self.rank + 1) % self.world]

    def send(self, type: str, fields: dict, tensors=()) -> None:
        frames = wire.encode(type, {"gen": self.gen, **fields} if type != "bye" else fields,
                             tensors, secret=None)
        self.bytes_sent += sum(memoryview(f).nbytes for f in frames)
        self.push.send_multipart(frames, copy=False)

    def forward(self, msg: wire.Message) -> None:
        """Pass a received message on unchanged (zero-copy)."""
        self.bytes_sent += sum(f.buffer.nbytes for f in msg.raw)
        self.push.send_multipart(msg.raw, copy=False)

    def recv(self, what: str) -> wire.Message:
        """Next message of this generation from the left neighbour; `what` names the
        expected message in errors."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self.cancel.is_set():
                raise PeerLost(f"{self.name}: aborted while waiting for {what}")
            if self.held:
                return self.held.popleft()
            if self.pull.poll(POLL_MS):
                msg = self._read(what)
                if msg is not None:
                    return msg
            elif time.monotonic() > deadline:
                raise PeerLost(f"{self.name}: no {what} from left neighbour {self.left} "
                               f"for {self.timeout_s:.1f}s (rank {self.rank}/{self.world}, gen {self.gen})")

    def _read(self, what: str) -> wire.Message | None:
        """The message waiting on the socket if it is of this generation (None: dropped);
        raises PeerLost when it is the left neighbour's goodbye."""
        frames = self.pull.recv_multipart(copy=False)
        try:
            msg = wire.decode([f.buffer for f in frames], secret=None)
        except wire.WireError:
            self.dropped += 1
            return None
        if msg.type == "bye":
            if msg["node"] == self.left:
                raise PeerLost(f"{self.name}: left neighbour {self.left} left the ring "
                               f"({msg['reason']}) while we waited for {what}")
            return None
        if msg.fields.get("gen") != self.gen:
            self.dropped += 1
            return None
        msg.raw = frames
        return msg

    def check(self, what: str) -> None:
        """Without waiting: raise PeerLost if we were cancelled or the left neighbour said
        goodbye; messages of this generation read on the way are kept for recv.  For
        waits that do not read the socket (shmstream's polls on shared memory)."""
        if self.cancel.is_set():
            raise PeerLost(f"{self.name}: aborted while waiting for {what}")
        while self.pull.poll(0):
            msg = self._read(what)
            if msg is not None:
                self.held.append(msg)

    def drop_stream(self) -> None:
        if self.stream is not None and self.stream[2] is not None:
            self.stream[2].close()
        self.stream = None

    def say_bye(self, reason: str) -> None:
        """Tell the right neighbour we are leaving so it need not wait for a timeout."""
        if self.push is not None:
            try:
                self.push.send_multipart(wire.encode("bye", {"node": self.endpoint, "reason": reason},
                                                     secret=None), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # nobody listening: nothing to tell

    def close(self, linger_ms: int = 200) -> None:
        """`linger_ms`: how long ctx.term() may wait for queued sends (the last segments
        of a collective can still be queued for a slower right neighbour)."""
        if self.push is not None:
            self.push.close(linger=linger_ms)
        self.pull.close(linger=0)
        auth.ZapHandler.unregister(self.ctx, self.domain)
        if self.segments is not None:
            self.segments.close()
            self.segments = None
        self.drop_stream()
        if self.local:
            try:
                os.unlink(self.local)
            except OSError:
                pass
