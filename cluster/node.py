"""engine-node: the per-host daemon.  It announces its devices and measured speed,
accepts a job (IR + weights + dataset), runs training steps with ring all-reduce, and
serves health and Prometheus metrics.

Threads: the main thread owns the control socket and answers hello/ping/abort at once,
even mid-step, so heartbeats never stall behind compute; a worker thread runs job
requests in order.  Any refused message gets an error reply and the node keeps serving.

Hardening (cluster/README.md, "Threat model"): a control connection is admitted only
after a CURVE (or PLAIN-token) handshake made from the secret, before ZeroMQ reads a
message frame; no frame above wire.FRAME_BYTES is read; a handshake must finish within
--handshake-timeout; connections per peer address and in all are capped.  Every message
is MAC'd with a fresh nonce and time (a replay is refused), every request after hello
carries the session token that hello handed to that connection, a reply names the nonce
of the request it answers, and job requests (weights and optimizer state included) are
served only to the connection that sent the job.  Non-finite gradients are never
applied; a step or program over its time budget cancels the job and is reported.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import queue
import re
import resource
import secrets
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict

import numpy as np
import zmq

import zmq.utils.monitor

from . import auth, devicetrain, hostpool, program, ring, wire
from .allreduce import PlanMismatch, allreduce, pack, unpack
from .metrics import NodeMetrics
from .optimizer import HostOptimizer, OptimizerError
from .ring import PeerLost, RingLinks

log = logging.getLogger("engine-node")
QUEUED = {"job", "program", "ring", "step", "state", "stop"}
OWNED = QUEUED - {"job"} | {"abort"}     # served only to the connection that sent the job
MAX_SESSIONS = 64


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: the common soft 1,024 is what a flood of
    idle connections exhausted.  Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


class ConnectionCap:
    """Caps a listening ZeroMQ socket's TCP connections, per peer address and in all.

    It reads the socket's monitor events (no thread: the caller polls `sock`); for each
    accepted connection it looks up the peer's address on a duplicate of the descriptor
    and, above a cap, shuts that connection down (libzmq then sees the peer hang up).
    A handshake that does not finish in ZMQ_HANDSHAKE_IVL is dropped by libzmq itself."""
    FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH

    def __init__(self, target: zmq.Socket, per_peer: int, total: int, name: str = "control"):
        self.per_peer, self.total, self.name = per_peer, total, name
        self.sock = target.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | self.FAILED)
        self.by_fd: dict[int, str] = {}
        self.count: dict[str, int] = {}
        self.dropped = self.failed = 0     # over a cap; handshake refused (wrong or no key, bad token)

    def process(self) -> None:
        while self.sock.poll(0):
            ev = zmq.utils.monitor.recv_monitor_message(self.sock)
            fd = ev["value"]
            if ev["event"] & self.FAILED:
                self.failed += 1
            elif ev["event"] == zmq.EVENT_ACCEPTED:
                try:
                    dup = socket.socket(fileno=os.dup(fd))
                except OSError:
                    continue            # already gone
                try:
                    peer = dup.getpeername()[0]
                    if self.count.get(peer, 0) >= self.per_peer or len(self.by_fd) >= self.total:
                        dup.shutdown(socket.SHUT_RDWR)
                        self.dropped += 1
                        if self.dropped <= 20 or self.dropped % 1000 == 0:
                            log.warning("dropped a %s connection from %s (%d so far): over %d per peer "
                                        "or %d in all", self.name, peer, self.dropped, self.per_peer, self.total)
                        continue
                    self.by_fd[fd] = peer
                    self.count[peer] = self.count.get(peer, 0) + 1
                except OSError:
                    continue
                finally:
                    dup.close()         # closes the duplicate only
            elif ev["event"] == zmq.EVENT_DISCONNECTED and fd in self.by_fd:
                peer = self.by_fd.pop(fd)
                self.count[peer] -= 1
                if not self.count[peer]:
                    del self.count[peer]

    def close(self) -> None:
        self.sock.close(linger=0)


class JobError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def measure_speed(device=None) -> float:
    """GFLOP/s of a float32 matmul on the node's OpenCL device: a relative speed for the
    first load balance (the driver re-measures samples/s during training).  Where the
    engine cannot run, numpy's matmul on the host, best of five short windows so a
    neighbour starting at the same moment does not make this node look slow."""
    try:
        gflops = program.device_gflops(device)
    except Exception as e:   # a broken OpenCL driver must not keep the daemon from serving
        log.warning("device speed not measured (%s: %s); using the host's", type(e).__name__, e)
        gflops = None
    if gflops:
        return gflops
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    best = 0.0
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.03:
            a @ a
            n += 1
        best = max(best, 2 * 256 ** 3 * n / (time.perf_counter() - t0) / 1e9)
    return best


DATASET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def local_dataset(data_dir: str | None, spec: dict) -> dict:
    """The job's rows from this node's data directory: <data_dir>/<name>.arrow, checked
    against the driver's content hash so every node trains on the same rows."""
    name, digest = spec.get("name"), spec.get("digest")
    if set(spec) != {"name", "digest"} or not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise JobError("bad_job", f"dataset must be {{name, digest}} with a plain file name, got {spec!r}")
    if not data_dir:
        raise JobError("no_dataset", f"job names dataset {name!r} but this node has no data directory "
                       "(set ENGINE_NODE_DATA)")
    path = os.path.join(data_dir, name + ".arrow")
    if not os.path.isfile(path):
        raise JobError("no_dataset", f"dataset {name!r} not found: {path}")
    table = wire.load_table(path)
    if wire.table_digest(table) != digest:
        raise JobError("bad_dataset", f"{path} differs from the driver's dataset {name!r} (content hash)")
    return table


class Job:
    def __init__(self, msg: wire.Message, data_dir: str | None = None):
        names, n_state = msg["names"], msg["n_state"]
        if not all(isinstance(n, str) for n in names) or len(msg.tensors) != len(names) + n_state:
            raise JobError("bad_job", f"{len(msg.tensors)} tensors for {len(names)} params + {n_state} state")
        table = local_dataset(data_dir, msg["dataset"]) if "dataset" in msg.fields else msg.table
        if table is None or set(table) != {"x", "y"} or len(table["x"]) != len(table["y"]):
            raise JobError("bad_job", "job needs a table with columns x and y of equal length")
        self.id, self.names, self.step = msg["job"], names, msg["step"]
        self.params = [np.array(t, np.float32) for t in msg.tensors[:len(names)]]
        self.shapes = [p.shape for p in self.params]
        self.opt = HostOptimizer(msg["optimizer"], self.shapes)
        if n_state:
            self.opt.load(msg.tensors[len(names):], self.step)
        else:
            self.opt.t = self.step
        self.x, self.y = table["x"], table["y"]
        self.host_optimizer = bool(msg.fields.get("host_optimizer", False))   # the driver's choice (mixed devices)
        self.runners: dict[int, object] = {}
        self.prev = None   # state before the last update, to roll back a step the ring abandoned
        # engine programs: weights and optimizer state move to the device with the first
        # program (devicetrain); until then, and for reference programs, they are on the host
        self.dev: devicetrain.DeviceTrainer | None = None
        self.flat: np.ndarray | None = None   # packed gradients + loss, reused every step

    def to_device(self, device) -> None:
        if self.dev is None:
            self.dev = devicetrain.DeviceTrainer(device, self.opt.spec, self.params, self.opt.state, self.step)
            self.params = self.opt = None      # the device holds them now

    def weights(self) -> list[np.ndarray]:
        return self.dev.weights() if self.dev else self.params

    def opt_state(self) -> list[np.ndarray]:
        return self.dev.state() if self.dev else self.opt.state

    def digest(self) -> str:
        """Checksum of the weights, compared across nodes every --digest-every steps.  It
        guards against bugs and nondeterminism, not attackers (peers are authenticated),
        so CRC-32 will do (SHA-256 of 7 MB of weights took 5.9 ms a step).  On the device
        path it costs a download of the weights."""
        return hostpool.checksum(self.weights())


class NodeDaemon:
    def __init__(self, listen: str, secret: bytes, *, device=None, data_dir=None, metrics_addr="127.0.0.1:0",
                 throttle: float = 1.0, throttle_from: int = 0, advertise: str | None = None, peer_timeout: float = 30.0,
                 max_message_bytes: int = wire.MAX_MESSAGE_BYTES, data_port: int | None = None,
                 handshake_timeout: float = 5.0, max_conns_per_peer: int = 16, max_conns: int = 128,
                 step_budget: float = 600.0, compile_budget: float = 1800.0, snapshot_every: int = 1,
                 digest_every: int = 10, host_optimizer: bool = False):
        self.max_bytes = max_message_bytes
        # rollback snapshot (device copy) before every Nth update; weights checksum after every Kth (0: never)
        self.snapshot_every, self.digest_every = max(0, int(snapshot_every)), max(0, int(digest_every))
        self.host_optimizer = host_optimizer   # engine programs too: weights on the host, numpy update
        secret = auth.check_secret(secret)
        self.secret, self.device, self.data_dir, self.throttle = secret, device, data_dir, max(1.0, throttle)
        self.throttle_from = throttle_from
        self.budgets = {"step": step_budget, "program": compile_budget}
        self.ctx = ring.context()
        self.control = self.ctx.socket(zmq.ROUTER)
        # No frame above FRAME_BYTES is ever read (zmq drops such a connection), and nothing
        # at all before the peer passed the handshake, which must end within handshake_timeout.
        self.control.setsockopt(zmq.MAXMSGSIZE, wire.SOCKET_MAX_FRAME)
        self.control.setsockopt(zmq.HANDSHAKE_IVL, int(handshake_timeout * 1000))
        self.control.setsockopt(zmq.LINGER, 500)
        self.control.setsockopt(zmq.TCP_KEEPALIVE, 1)
        self.control.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
        self.gate = auth.control_server(self.control, self.ctx, secret, f"control-{id(self)}", lambda: self.endpoint)
        self.conns = ConnectionCap(self.control, max_conns_per_peer, max_conns)
        self.control.bind(listen)
        host = listen.rsplit(":", 1)[0]
        # a fixed data port is what a firewall, a NetworkPolicy or a Kubernetes containerPort can name
        try:
            self.links = RingLinks(self.ctx, f"{host}:{data_port or '*'}", secret, timeout_s=peer_timeout)
        except zmq.ZMQError as e:
            self.control.close(linger=0)
            raise zmq.ZMQError(e.errno, f"cannot bind the ring data socket {host}:{data_port}: {os.strerror(e.errno)} "
                                        "(another process on that port? pick another --data-port)") from None
        self.endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        if advertise:   # bound to 0.0.0.0 (e.g. in Kubernetes): tell peers a routable name
            self.endpoint = f"tcp://{advertise}:{self.endpoint.rsplit(':', 1)[1]}"
            self.links.endpoint = f"tcp://{advertise}:{self.links.endpoint.rsplit(':', 1)[1]}"
        self.links.name = f"node {self.endpoint}"
        # the ring's data socket is as open as the control one: the same caps (its own
        # handshake timeout is set in ring.py)
        self.ring_conns = ConnectionCap(self.links.pull, max_conns_per_peer, max_conns, "ring data")
        self.to_main, self.from_worker = self.ctx.socket(zmq.PAIR), self.ctx.socket(zmq.PAIR)
        self.from_worker.bind(f"inproc://replies-{id(self)}")
        self.to_main.connect(f"inproc://replies-{id(self)}")
        self.metrics = NodeMetrics()
        self.metrics.refused_connections.set_function(
            lambda: sum(c.failed + c.dropped for c in (self.conns, self.ring_conns)))
        mhost, mport = metrics_addr.rsplit(":", 1)
        self.http, self.metrics_port = self.metrics.serve(mhost, int(mport), self.health)
        self.metrics_url = f"http://{mhost}:{self.metrics_port}"
        self.speed = measure_speed(device)   # the hardware's speed: a throttle is for the driver to discover
        self.device_id = program.device_identity(device)
        self.job: Job | None = None
        self.busy = False
        self.driver = None          # routing id of the driver, to say bye to
        self.stopping = False
        self.n_refused = 0
        self.replay = wire.ReplayGuard()
        self.sessions: OrderedDict[bytes, str] = OrderedDict()   # connection -> session token from hello
        self.running = None          # (ident, msg, started) of the worker's current request
        self.compute_since = None    # when the current step's forward/backward began
        self.cancelled = None        # the request the budget watchdog cancelled
        self.lock = threading.Lock()
        self.inbox: queue.Queue = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="job-worker", daemon=True)

    # --- main thread: the control socket -------------------------------------------
    def health(self) -> dict:
        """Unauthenticated (anyone who reaches the metrics port): liveness and what the UI
        shows, nothing that helps an attacker (no job id, endpoints or paths)."""
        return {"status": "ok", "busy": self.busy, "step": self.job.step if self.job else None,
                "heartbeat_age_s": time.monotonic() - self.metrics.last_heard,
                "devices": [f"{d.get('name', '?')} ({d.get('kind', '?')})" for d in self._devices]}

    def _reply(self, ident: bytes, req, type: str, fields=None, tensors=(), *, worker: bool = True) -> None:
        """Sockets are single-threaded: the worker's replies go via the main thread.
        A reply names the request's id and nonce, so it answers that request only."""
        fields = dict(fields or {})
        if req is not None:
            if isinstance(req.fields.get("id"), int):
                fields["re"] = req.fields["id"]
            fields["rn"] = req.fields["n"]
        sock = self.to_main if worker else self.control
        sock.send_multipart([ident, *wire.encode(type, fields, tensors, secret=self.secret)], copy=False)

    def serve(self) -> None:
        self.worker.start()
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.from_worker, zmq.POLLIN)
        poller.register(self.conns.sock, zmq.POLLIN)
        poller.register(self.ring_conns.sock, zmq.POLLIN)
        while not self.stopping:
            events = dict(poller.poll(100))
            if self.conns.sock in events:
                self.conns.process()
            if self.ring_conns.sock in events:
                self.ring_conns.process()
            if self.from_worker in events:
                self.control.send_multipart(self.from_worker.recv_multipart(copy=False), copy=False)
            if self.control in events:
                self._handle(self.control.recv_multipart(copy=False))
            self._watchdog()
        self._shutdown("SIGTERM")

    def _watchdog(self) -> None:
        """Cancel the job whose step (or program build) ran past its budget, and say so.
        Compute already running cannot be interrupted (an OpenCL kernel or a numpy call
        runs to its end); its result is thrown away and the job is gone."""
        with self.lock:
            if self.running is None or self.running is self.cancelled:
                return
            ident, msg, started = self.running
            if msg.type == "step":      # a step's own compute; waiting on the ring has --peer-timeout
                started = self.compute_since
            budget = self.budgets.get(msg.type)
            if budget is None or started is None or time.monotonic() - started <= budget:
                return
            self.cancelled = self.running
            job, self.job = self.job, None
            self.links.cancel.set()
        text = (f"{msg.type} {msg.fields.get('step', msg.fields.get('batch'))} of job {msg.fields.get('job')!r} "
                f"ran past its time budget of {budget:g}s: job cancelled on this node")
        log.error(text)
        self.metrics.bad_messages.labels("over_budget").inc()
        self._reply(ident, msg, "error", {"code": "over_budget", "message": text}, worker=False)

    def _handle(self, frames) -> None:
        ident = frames[0].bytes
        try:
            msg = wire.decode([f.buffer for f in frames[1:]], secret=self.secret, max_bytes=self.max_bytes)
            if msg.type not in QUEUED | {"hello", "ping", "abort"}:
                raise wire.WireError("bad_request", f"a node does not accept {msg.type!r} messages")
            self.replay.check(msg)
            if msg.type != "hello" and msg.fields.get("session") != self.sessions.get(ident):
                raise wire.WireError("bad_session", "no session on this connection with that token: say hello first")
            if msg.type in OWNED and self.job is not None and ident != self.job.owner:
                raise wire.WireError("not_owner", f"{msg.type}: job {self.job.id!r} belongs to another driver")
        except Exception as e:   # WireError, or a decoder bug: either way refuse and keep serving
            if not isinstance(e, wire.WireError):
                log.exception("decoder failed")
                e = wire.WireError("internal", f"{type(e).__name__}: {e}")
            self.metrics.bad_messages.labels(e.code).inc()
            self.n_refused += 1
            if self.n_refused <= 20 or self.n_refused % 1000 == 0:   # a flood must not flood the log
                log.warning("refused a message from %r (%d so far): %s", ident, self.n_refused, e)
            self.control.send_multipart([ident, *wire.encode("error", {"code": e.code, "message": str(e)},
                                                             secret=self.secret)])
            return
        self.metrics.last_heard = time.monotonic()
        if msg.type == "hello":
            if self.job is None:
                self.driver = ident
            sid = self.sessions.pop(ident, None) or secrets.token_hex(16)
            self.sessions[ident] = sid
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            self._reply(ident, msg, "info", {"node": self.endpoint, "devices": self._devices, "session": sid,
                                             "speed": self.speed, "data": self.links.endpoint}
                        | ({"device": self.device_id} if self.device_id else {}), worker=False)
        elif msg.type == "ping":
            self._reply(ident, msg, "pong", {"t": msg["t"], "busy": self.busy,
                                             "step": self.job.step if self.job else -1}, worker=False)
        elif msg.type == "abort":
            self.links.cancel.set()        # a collective in flight ends within one poll slice
            self._reply(ident, msg, "ok", worker=False)
        else:
            self.inbox.put((ident, msg))

    def devices(self) -> list:
        return program.engine_devices() or [{"name": "host numpy", "kind": "cpu"}]

    @property
    def _devices(self) -> list:
        if not hasattr(self, "_devices_cache"):
            self._devices_cache = self.devices()
        return self._devices_cache

    def _shutdown(self, reason: str) -> None:
        """Tell the driver and the right neighbour we are going, then close."""
        log.info("shutting down: %s", reason)
        self.links.cancel.set()
        if self.driver is not None:
            self.control.send_multipart([self.driver, *wire.encode("bye", {"node": self.endpoint, "reason": reason},
                                                                   secret=self.secret)])
        self.links.say_bye(reason)
        self.inbox.put(None)
        self.worker.join(timeout=5)
        self.http.shutdown()
        self.ring_conns.close()
        self.links.close()
        self.conns.close()
        auth.ZapHandler.unregister(self.ctx, f"control-{id(self)}")
        self.ctx.destroy(linger=200)

    # --- worker thread: job requests in order -------------------------------------------
    def _work(self) -> None:
        while (item := self.inbox.get()) is not None:
            ident, msg = item
            self.busy = True
            with self.lock:
                self.running = (ident, msg, time.monotonic())
                run = self.running
            try:
                reply = getattr(self, f"_on_{msg.type}")(ident, msg)
            except (PeerLost, PlanMismatch) as e:
                log.warning("step %s failed: %s", msg.fields.get("step"), e)
                f = {"step": msg.fields.get("step", -1), "message": str(e)}
                if isinstance(e, PlanMismatch) and e.peer:   # the neighbour that disagreed, for the driver to drop
                    f |= {"code": "plan_mismatch", "peer": e.peer}
                reply = ("step_failed", f)
            except (JobError, OptimizerError, program.ProgramError, ValueError, TypeError, KeyError, IndexError) as e:
                code = getattr(e, "code", "bad_request")
                self.metrics.bad_messages.labels(code).inc()
                reply = ("error", {"code": code, "message": f"{msg.type}: {e}"})
            except Exception as e:   # a bug must not kill the worker: report it loudly and keep serving
                log.exception("internal error on %s", msg.type)
                self.metrics.bad_messages.labels("internal").inc()
                reply = ("error", {"code": "internal", "message": f"{msg.type}: {type(e).__name__}: {e}"})
            with self.lock:
                self.running = None
                late = self.cancelled is run   # the watchdog has answered it already
                self.busy = False
            if late:
                log.warning("%s finished after it was cancelled; result discarded", msg.type)
            else:
                self._reply(ident, msg, *reply)

    def _need_job(self, msg) -> Job:
        if self.job is None or self.job.id != msg["job"]:
            raise JobError("no_job", f"no job {msg['job']!r} on this node")
        return self.job

    def _on_job(self, ident, msg):
        job = Job(msg, self.data_dir)
        job.owner = self.driver = ident   # the only connection its weights and state go to
        self.job = job
        return "ok", {"step": job.step}

    def _on_program(self, ident, msg):
        job = self._need_job(msg)
        prog = program.load(msg["program"])
        if list(prog.param_names) != job.names or [tuple(s) for s in prog.param_shapes] != job.shapes:
            raise JobError("bad_program", "program parameters do not match the job's")
        b, t0 = msg["batch"], time.perf_counter()
        runner = prog.bind(device=self.device)
        on_device = not (self.host_optimizer or job.host_optimizer or isinstance(prog, program.reference.ReferenceProgram))
        if on_device != (job.dev is not None) and job.runners:
            raise JobError("bad_program", "a job's programs must all be engine programs or all reference ones")
        if on_device:    # weights and optimizer state move to the device; the runner reads them there
            job.to_device(runner.device)
            job.dev.bind(runner)
        if b > 0 and len(job.x):   # build every kernel now: a step's compute time then measures the device, not the compiler
            idx = np.arange(b) % len(job.x)
            if on_device:   # captures the launch list too (gradients only: no update)
                job.dev.forward_backward(runner, job.x[idx], job.y[idx], np.empty(sum(job.dev.sizes) + 1, np.float32))
            else:
                runner.run(job.params, job.x[idx], job.y[idx])
        job.runners[b] = runner
        log.info("program for batch %d ready in %.2fs (weights and optimizer on the %s)", b,
                 time.perf_counter() - t0, "device" if on_device else "host")
        return "ok", {"step": job.step}

    def _on_ring(self, ident, msg):
        job, step, peers, rank = self._need_job(msg), msg["step"], msg["peers"], msg["rank"]
        if not (0 <= rank < len(peers) and all(isinstance(p, str) for p in peers) and peers[rank] == self.links.endpoint):
            raise JobError("bad_ring", f"rank {rank} of {peers} is not this node ({self.links.endpoint})")
        snap = job.dev.snap[0] if job.dev and job.dev.snap else None
        if job.step == step + 1 and job.prev is not None:    # the ring abandoned the step we finished
            job.params, job.opt.state, job.opt.t = job.prev
            job.step = step
        elif job.dev and job.step > step and snap == step:   # the same, from the device snapshot
            job.step = job.dev.restore()
        elif job.step != step:
            why = f" (device snapshot at step {snap}, taken every {self.snapshot_every})" if job.dev else ""
            raise JobError("bad_step", f"node is at step {job.step}, cannot resume at {step}{why}")
        job.prev = None
        if job.dev and job.dev.snap and snap != job.step:   # never roll back past a formed ring
            job.dev.snap = (None, job.dev.snap[1])
        self.links.cancel.clear()
        self.links.connect(msg["gen"], rank, peers)
        return "ok", {"step": job.step}

    def _on_step(self, ident, msg):
        job, b = self._need_job(msg), msg["batch"]
        if msg["gen"] != self.links.gen or msg["step"] != job.step:
            raise JobError("bad_step", f"step {msg['step']} gen {msg['gen']}: node is at step {job.step} gen {self.links.gen}")
        idx = msg.tensors[0] if len(msg.tensors) == 1 else None
        if b not in job.runners or idx is None or idx.dtype != np.int64 or idx.shape != (b,):
            raise JobError("bad_step", f"need a program for batch {b} and {b} int64 indices")
        if b and (idx.min() < 0 or idx.max() >= len(job.x)) or not 0 < msg["weight"] <= 1:
            raise JobError("bad_step", "indices out of range or weight not in (0, 1]")
        t0 = time.perf_counter()
        self.compute_since = time.monotonic()
        if job.dev and job.flat is None:
            job.flat = np.empty(sum(job.dev.sizes) + 1, np.float32)
        try:
            if job.dev:    # gradients and loss downloaded straight into the packed buffer
                job.dev.forward_backward(job.runners[b], job.x[idx], job.y[idx], job.flat)
            else:
                loss, grads = job.runners[b].run(job.params, job.x[idx], job.y[idx])
            compute = time.perf_counter() - t0
            if self.throttle > 1 and job.step >= self.throttle_from:   # simulate a slower device (load-balancing tests)
                time.sleep(compute * (self.throttle - 1))
                compute *= self.throttle
        finally:
            self.compute_since = None
        w = np.float32(msg["weight"])   # gradients weighted by samples: sum = global-batch mean
        flat = job.flat if job.dev else pack([*grads, np.float32([loss])])
        flat *= w
        t1, sent0 = time.perf_counter(), self.links.bytes_sent
        allreduce(self.links, flat, job.step)
        ar = time.perf_counter() - t1
        # Every rank holds the same sum, so every rank refuses together (before any update).
        if not hostpool.all_finite(flat):
            bad = int(np.count_nonzero(~np.isfinite(flat[:-1])))
            raise JobError("nonfinite", f"step {job.step}: {bad} gradient value(s) (or the loss) are NaN or Inf "
                                        "after the all-reduce; not applied, weights stay at this step")
        if job.dev:    # snapshot on the device, then the reduced gradients go back up for the fused update
            if self.snapshot_every and job.step % self.snapshot_every == 0:
                job.dev.snapshot(job.step)
            job.dev.update(flat)
        else:
            job.prev = (hostpool.copy(job.params), hostpool.copy(job.opt.state), job.opt.t)
            job.opt.update(job.params, unpack(flat[:-1], job.shapes))
        job.step += 1
        check = self.digest_every and job.step % self.digest_every == 0
        m, n = self.metrics, self.links.world
        m.steps.inc()
        m.step_seconds.set(time.perf_counter() - t0)
        m.compute_seconds.set(compute)
        m.samples_per_second.set(b / compute if compute else 0)
        m.allreduce_bytes.inc(self.links.bytes_sent - sent0)
        m.allreduce_bandwidth.set(2 * (n - 1) / n * flat.nbytes / ar if n > 1 and ar else 0)
        return "step_done", {"step": job.step, "loss": float(flat[-1]), "compute_s": compute, "allreduce_s": ar,
                             "bytes": self.links.bytes_sent - sent0} | ({"digest": job.digest()} if check else {})

    def _on_state(self, ident, msg):
        job = self._need_job(msg)
        state = job.opt_state()
        return "state_data", {"step": job.step, "names": job.names, "n_state": len(state)}, \
            [a.copy() for a in (*job.weights(), *state)]   # sent zero-copy; the next step mutates in place

    def _on_stop(self, ident, msg):
        self.job = None
        return "ok", {}


def main(argv=None) -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="engine-node", description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default=env("ENGINE_NODE_LISTEN", "tcp://127.0.0.1:7070"),
                    help="control endpoint; tcp://127.0.0.1:* picks a free port [ENGINE_NODE_LISTEN]")
    ap.add_argument("--device", default=env("ENGINE_NODE_DEVICE"), help="OpenCL device index or name [ENGINE_NODE_DEVICE]")
    ap.add_argument("--data", default=env("ENGINE_NODE_DATA"),
                    help="directory of datasets (NAME.arrow) a job may name instead of shipping rows [ENGINE_NODE_DATA]")
    ap.add_argument("--log", default=env("ENGINE_NODE_LOG"), help="log file (default stderr) [ENGINE_NODE_LOG]")
    ap.add_argument("--metrics", default=env("ENGINE_NODE_METRICS", "127.0.0.1:9100"),
                    help="host:port of /healthz and /metrics; port 0 picks one [ENGINE_NODE_METRICS]")
    ap.add_argument("--data-port", type=int, default=env("ENGINE_NODE_DATA_PORT"),
                    help="port of the ring data socket, on --listen's host; default (or 0) picks a free one "
                         "[ENGINE_NODE_DATA_PORT]")
    ap.add_argument("--advertise", default=env("ENGINE_NODE_ADVERTISE"),
                    help="host name peers and the driver should dial, when bound to 0.0.0.0 [ENGINE_NODE_ADVERTISE]")
    ap.add_argument("--throttle", type=float, default=float(env("ENGINE_NODE_THROTTLE", "1")),
                    help="run N times slower (to test load balancing) [ENGINE_NODE_THROTTLE]")
    ap.add_argument("--throttle-from", type=int, default=0, help="throttle only from this training step on")
    ap.add_argument("--peer-timeout", type=float, default=30.0, help="seconds to wait on a silent ring neighbour")
    ap.add_argument("--max-message-mb", type=float, default=wire.MAX_MESSAGE_BYTES / 2**20,
                    help="refuse control messages larger than this")
    ap.add_argument("--handshake-timeout", type=float, default=5.0,
                    help="seconds a new control connection has to pass authentication before it is dropped")
    ap.add_argument("--max-conns-per-peer", type=int, default=16, help="control connections from one address")
    ap.add_argument("--max-conns", type=int, default=128,
                    help="control connections in all (x 4 MB bounds what unauthenticated peers can make the node hold)")
    ap.add_argument("--step-budget", type=float, default=float(env("ENGINE_NODE_STEP_BUDGET", "600")),
                    help="seconds a training step may take before the node cancels the job [ENGINE_NODE_STEP_BUDGET]")
    ap.add_argument("--compile-budget", type=float, default=1800.0,
                    help="seconds building and warming up one program may take before the job is cancelled")
    ap.add_argument("--max-program-mb", type=float, default=float(env("ENGINE_NODE_MAX_PROGRAM_MB", "0") or 0),
                    help="device memory one program may allocate (0: engine.validate's default) "
                         "[ENGINE_NODE_MAX_PROGRAM_MB]")
    ap.add_argument("--snapshot-every", type=int, default=int(env("ENGINE_NODE_SNAPSHOT_EVERY", "1")),
                    help="engine programs: copy weights and optimizer state on the device before every Nth update, "
                         "to roll back a step the ring abandons; a step abandoned between snapshots cannot be "
                         "resumed on this node (0: never) [ENGINE_NODE_SNAPSHOT_EVERY]")
    ap.add_argument("--digest-every", type=int, default=int(env("ENGINE_NODE_DIGEST_EVERY", "10")),
                    help="send a checksum of the weights (a download on engine programs) with every Kth step, "
                         "for the driver to compare across ranks (0: never) [ENGINE_NODE_DIGEST_EVERY]")
    ap.add_argument("--host-optimizer", action="store_true",
                    default=env("ENGINE_NODE_HOST_OPTIMIZER", "") not in ("", "0"),
                    help="keep an engine job's weights on the host and update them in numpy (the path before "
                         "issue 14: slower, but bitwise-identical updates on rings of different device kinds) "
                         "[ENGINE_NODE_HOST_OPTIMIZER]")
    a = ap.parse_args(argv)
    logging.basicConfig(filename=a.log, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    secret = env("ENGINE_NODE_SECRET")
    if not secret:
        print("engine-node: set ENGINE_NODE_SECRET (the cluster's shared secret); refusing to run unauthenticated",
              file=sys.stderr)
        return 2
    try:
        auth.check_secret(secret)
    except auth.SecretError as e:
        print(f"engine-node: ENGINE_NODE_SECRET: {e}", file=sys.stderr)
        return 2
    if a.max_program_mb:
        os.environ["ENGINE_MAX_PROGRAM_BYTES"] = str(int(a.max_program_mb * 2**20))
    raise_fd_limit()
    if a.device:
        try:
            log.info("device %s", program.check_device(a.device))
        except program.ProgramError as e:
            print(f"engine-node: {e}", file=sys.stderr)
            return 2
    node = NodeDaemon(a.listen, secret.encode(), device=a.device, data_dir=a.data, metrics_addr=a.metrics,
                      throttle=a.throttle, throttle_from=a.throttle_from, advertise=a.advertise, peer_timeout=a.peer_timeout,
                      max_message_bytes=int(a.max_message_mb * 2**20), data_port=a.data_port,
                      handshake_timeout=a.handshake_timeout, max_conns_per_peer=a.max_conns_per_peer,
                      max_conns=a.max_conns, step_budget=a.step_budget, compile_budget=a.compile_budget,
                      snapshot_every=a.snapshot_every, digest_every=a.digest_every, host_optimizer=a.host_optimizer)
    signal.signal(signal.SIGTERM, lambda *_: setattr(node, "stopping", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(node, "stopping", True))
    faulthandler.register(signal.SIGUSR1)   # `kill -USR1 <pid>` prints every thread's stack
    print(f"engine-node ready control={node.endpoint} data={node.links.endpoint} metrics={node.metrics_url}", flush=True)
    node.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
