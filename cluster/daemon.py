"""engine-node: the per-host daemon.  It announces its devices and measured speed,
accepts a job (IR + weights + dataset), runs training steps with ring all-reduce, and
serves health and Prometheus metrics.

Threads: the main thread owns the control socket and answers hello/ping/abort/halt at
once, even mid-step, so heartbeats never stall behind compute; a worker thread runs job
requests in order (a `run` takes many steps on its own: cluster/runs.py).  Any refused
message gets an error reply and the node keeps serving.

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

import logging
import os
import queue
import secrets
import threading
import time
from collections import OrderedDict

import numpy as np
import zmq

from . import auth, program, ring, wire
from .connections import ConnectionCap
from .job import Job
from .job_handlers import JobHandlers
from .metrics import NodeMetrics
from .ring import RingLinks

log = logging.getLogger("engine-node")
QUEUED = {"job", "program", "ring", "step", "run", "state", "stop"}
OWNED = QUEUED - {"job"} | {"abort", "halt"}     # served only to the connection that sent the job
MAX_SESSIONS = 64


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


class NodeDaemon(JobHandlers):
    def __init__(self, listen: str, secret: bytes, *, device=None, data_dir=None, metrics_addr="127.0.0.1:0",
                 throttle: float = 1.0, throttle_from: int = 0, advertise: str | None = None, peer_timeout: float = 30.0,
                 max_message_bytes: int = wire.MAX_MESSAGE_BYTES, data_port: int | None = None,
                 handshake_timeout: float = 5.0, max_conns_per_peer: int = 16, max_conns: int = 128,
                 step_budget: float = 600.0, compile_budget: float = 1800.0, snapshot_every: int = 1,
                 digest_every: int = 10, host_optimizer: bool = False, overlap_mb: float = -1.0,
                 cpus: list[int] | None = None):
        self.max_bytes = max_message_bytes
        self.cpus = sorted(cpus) if cpus else None   # engine-node --cpus (already pinned): told in hello
        # rollback snapshot (device copy) before every Nth update; weights checksum after every Kth (0: never)
        self.snapshot_every, self.digest_every = max(0, int(snapshot_every)), max(0, int(digest_every))
        self.host_optimizer = host_optimizer   # engine programs too: weights on the host, numpy update
        # engine programs in same-host rings: all-reduce pieces of at most this many bytes
        # while backward still runs (0: after backward; negative: by device kind, job_handlers)
        self.overlap_bytes = int(overlap_mb * 2**20)
        secret = auth.check_secret(secret)
        self.secret, self.device, self.data_dir, self.throttle = secret, device, data_dir, max(1.0, throttle)
        self.throttle_from = throttle_from
        self.budgets = {"step": step_budget, "run": step_budget, "program": compile_budget}   # run: per step
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
        self.links.bind_local()   # same-host neighbours skip loopback TCP (ring.py)
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
        self.halt_run = None         # id of the run the driver asked to halt at the next step boundary
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
            if msg.type in ("step", "run"):   # a step's own compute; waiting on the ring has --peer-timeout
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
            if msg.type not in QUEUED | {"hello", "ping", "abort", "halt"}:
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
                        | ({"device": self.device_id} if self.device_id else {})
                        | ({"cpus": self.cpus} if self.cpus else {}), worker=False)
        elif msg.type == "ping":
            self._reply(ident, msg, "pong", {"t": msg["t"], "busy": self.busy,
                                             "step": self.job.step if self.job else -1}, worker=False)
        elif msg.type == "abort":
            self.links.cancel.set()        # a collective in flight ends within one poll slice
            self._reply(ident, msg, "ok", worker=False)
        elif msg.type == "halt":           # the run votes to stop at its next all-reduce (cluster/runs.py)
            self.halt_run = msg["run"]
            self._reply(ident, msg, "ok", worker=False)
        else:
            self.inbox.put((ident, msg))

    def devices(self) -> list:
        """What hello reports: the engine's devices (with their compute units, which a node
        pinned with --cpus shrinks on PoCL), or the host's numpy."""
        devs = program.engine_devices()
        try:
            from engine.device_selection import devices as engine_devices
            units = {d.index: int(d.cl_device.max_compute_units) for d in engine_devices()}
            devs = [d | {"compute_units": units[d["index"]]} if d.get("index") in units else d for d in devs]
        except Exception:   # no engine, or no OpenCL: the devices as they are
            pass
        return devs or [{"name": "host numpy", "kind": "cpu"}]

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
