"""engine-node: the per-host daemon.  It announces its devices and measured speed,
accepts a job (IR + weights + dataset), runs training steps with ring all-reduce, and
serves health and Prometheus metrics.

Threads: the main thread owns the control socket and answers hello/ping/abort at once,
even mid-step, so heartbeats never stall behind compute; a worker thread runs job
requests in order.  Any refused message gets an error reply and the node keeps serving.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import queue
import re
import signal
import sys
import threading
import time

import numpy as np
import zmq

from . import hostpool, program, ring, wire
from .allreduce import PlanMismatch, allreduce, pack, unpack
from .metrics import NodeMetrics
from .optimizer import HostOptimizer, OptimizerError
from .ring import PeerLost, RingLinks

log = logging.getLogger("engine-node")
QUEUED = {"job", "program", "ring", "step", "state", "stop"}


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
        self.runners: dict[int, object] = {}
        self.prev = None   # state before the last update, to roll back a step the ring abandoned

    def digest(self) -> str:
        """Checksum of the weights, compared across nodes after every step.  It guards
        against bugs and nondeterminism, not attackers (peers are authenticated), so
        CRC-32 will do (SHA-256 of 7 MB of weights took 5.9 ms a step)."""
        return hostpool.checksum(self.params)


class NodeDaemon:
    def __init__(self, listen: str, secret: bytes, *, device=None, data_dir=None, metrics_addr="127.0.0.1:0",
                 throttle: float = 1.0, throttle_from: int = 0, advertise: str | None = None, peer_timeout: float = 30.0,
                 max_message_bytes: int = wire.MAX_MESSAGE_BYTES, data_port: int | None = None):
        self.max_bytes = max_message_bytes
        self.secret, self.device, self.data_dir, self.throttle = secret, device, data_dir, max(1.0, throttle)
        self.throttle_from = throttle_from
        self.ctx = ring.context()
        self.control = self.ctx.socket(zmq.ROUTER)
        # zmq drops a connection above MAXMSGSIZE without a word; keep it well above our own
        # limit so a merely oversized message still gets an error reply
        self.control.setsockopt(zmq.MAXMSGSIZE, 2 * max_message_bytes + (1 << 20))
        self.control.setsockopt(zmq.LINGER, 500)
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
        self.to_main, self.from_worker = self.ctx.socket(zmq.PAIR), self.ctx.socket(zmq.PAIR)
        self.from_worker.bind(f"inproc://replies-{id(self)}")
        self.to_main.connect(f"inproc://replies-{id(self)}")
        self.metrics = NodeMetrics()
        mhost, mport = metrics_addr.rsplit(":", 1)
        self.http, self.metrics_port = self.metrics.serve(mhost, int(mport), self.health)
        self.metrics_url = f"http://{mhost}:{self.metrics_port}"
        self.speed = measure_speed(device)   # the hardware's speed: a throttle is for the driver to discover
        self.job: Job | None = None
        self.busy = False
        self.driver = None          # routing id of the driver, to say bye to
        self.stopping = False
        self.n_refused = 0
        self.inbox: queue.Queue = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="job-worker", daemon=True)

    # --- main thread: the control socket -------------------------------------------
    def health(self) -> dict:
        return {"status": "ok", "node": self.endpoint, "data": self.links.endpoint, "busy": self.busy,
                "job": self.job.id if self.job else None, "step": self.job.step if self.job else None,
                "heartbeat_age_s": time.monotonic() - self.metrics.last_heard, "data_dir": self.data_dir,
                "devices": [f"{d.get('name', '?')} ({d.get('kind', '?')})" for d in self.devices()]}

    def _reply(self, ident: bytes, rid, type: str, fields=None, tensors=(), *, worker: bool = True) -> None:
        """Sockets are single-threaded: the worker's replies go via the main thread."""
        fields = dict(fields or {}, **({"re": rid} if isinstance(rid, int) else {}))
        sock = self.to_main if worker else self.control
        sock.send_multipart([ident, *wire.encode(type, fields, tensors, secret=self.secret)], copy=False)

    def serve(self) -> None:
        self.worker.start()
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.from_worker, zmq.POLLIN)
        while not self.stopping:
            events = dict(poller.poll(100))
            if self.from_worker in events:
                self.control.send_multipart(self.from_worker.recv_multipart(copy=False), copy=False)
            if self.control in events:
                self._handle(self.control.recv_multipart(copy=False))
        self._shutdown("SIGTERM")

    def _handle(self, frames) -> None:
        ident = frames[0].bytes
        try:
            msg = wire.decode([f.buffer for f in frames[1:]], secret=self.secret, max_bytes=self.max_bytes)
            if msg.type not in QUEUED | {"hello", "ping", "abort"}:
                raise wire.WireError("bad_request", f"a node does not accept {msg.type!r} messages")
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
        rid = msg.fields.get("id")
        if msg.type == "hello":
            self.driver = ident
            self._reply(ident, rid, "info", {"node": self.endpoint, "devices": self.devices(),
                                             "speed": self.speed, "data": self.links.endpoint}, worker=False)
        elif msg.type == "ping":
            self._reply(ident, rid, "pong", {"t": msg["t"], "busy": self.busy,
                                             "step": self.job.step if self.job else -1}, worker=False)
        elif msg.type == "abort":
            self.links.cancel.set()        # a collective in flight ends within one poll slice
            self._reply(ident, rid, "ok", worker=False)
        else:
            self.driver = ident
            self.inbox.put((ident, msg))

    def devices(self) -> list:
        return program.engine_devices() or [{"name": "host numpy", "kind": "cpu"}]

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
        self.links.close()
        self.ctx.destroy(linger=200)

    # --- worker thread: job requests in order -------------------------------------------
    def _work(self) -> None:
        while (item := self.inbox.get()) is not None:
            ident, msg = item
            rid = msg.fields.get("id")
            self.busy = True
            try:
                self._reply(ident, rid, *getattr(self, f"_on_{msg.type}")(msg))
            except (PeerLost, PlanMismatch) as e:
                log.warning("step %s failed: %s", msg.fields.get("step"), e)
                self._reply(ident, rid, "step_failed", {"step": msg.fields.get("step", -1), "message": str(e)})
            except (JobError, OptimizerError, program.ProgramError, ValueError, TypeError, KeyError, IndexError) as e:
                code = getattr(e, "code", "bad_request")
                self.metrics.bad_messages.labels(code).inc()
                self._reply(ident, rid, "error", {"code": code, "message": f"{msg.type}: {e}"})
            except Exception as e:   # a bug must not kill the worker: report it loudly and keep serving
                log.exception("internal error on %s", msg.type)
                self.metrics.bad_messages.labels("internal").inc()
                self._reply(ident, rid, "error", {"code": "internal", "message": f"{msg.type}: {type(e).__name__}: {e}"})
            finally:
                self.busy = False

    def _need_job(self, msg) -> Job:
        if self.job is None or self.job.id != msg["job"]:
            raise JobError("no_job", f"no job {msg['job']!r} on this node")
        return self.job

    def _on_job(self, msg):
        self.job = Job(msg, self.data_dir)
        return "ok", {"step": self.job.step}

    def _on_program(self, msg):
        job = self._need_job(msg)
        prog = program.load(msg["program"])
        if list(prog.param_names) != job.names or [tuple(s) for s in prog.param_shapes] != job.shapes:
            raise JobError("bad_program", "program parameters do not match the job's")
        b, t0 = msg["batch"], time.perf_counter()
        runner = prog.bind(device=self.device)
        if b > 0 and len(job.x):   # build every kernel now: a step's compute time then measures the device, not the compiler
            idx = np.arange(b) % len(job.x)
            runner.run(job.params, job.x[idx], job.y[idx])
        job.runners[b] = runner
        log.info("program for batch %d ready in %.2fs", b, time.perf_counter() - t0)
        return "ok", {"step": job.step}

    def _on_ring(self, msg):
        job, step, peers, rank = self._need_job(msg), msg["step"], msg["peers"], msg["rank"]
        if not (0 <= rank < len(peers) and all(isinstance(p, str) for p in peers) and peers[rank] == self.links.endpoint):
            raise JobError("bad_ring", f"rank {rank} of {peers} is not this node ({self.links.endpoint})")
        if job.step == step + 1 and job.prev is not None:    # the ring abandoned the step we finished
            job.params, job.opt.state, job.opt.t = job.prev
            job.step = step
        elif job.step != step:
            raise JobError("bad_step", f"node is at step {job.step}, cannot resume at {step}")
        job.prev = None
        self.links.cancel.clear()
        self.links.connect(msg["gen"], rank, peers)
        return "ok", {"step": job.step}

    def _on_step(self, msg):
        job, b = self._need_job(msg), msg["batch"]
        if msg["gen"] != self.links.gen or msg["step"] != job.step:
            raise JobError("bad_step", f"step {msg['step']} gen {msg['gen']}: node is at step {job.step} gen {self.links.gen}")
        idx = msg.tensors[0] if len(msg.tensors) == 1 else None
        if b not in job.runners or idx is None or idx.dtype != np.int64 or idx.shape != (b,):
            raise JobError("bad_step", f"need a program for batch {b} and {b} int64 indices")
        if b and (idx.min() < 0 or idx.max() >= len(job.x)) or not 0 < msg["weight"] <= 1:
            raise JobError("bad_step", "indices out of range or weight not in (0, 1]")
        t0 = time.perf_counter()
        loss, grads = job.runners[b].run(job.params, job.x[idx], job.y[idx])
        compute = time.perf_counter() - t0
        if self.throttle > 1 and job.step >= self.throttle_from:   # simulate a slower device (load-balancing tests)
            time.sleep(compute * (self.throttle - 1))
            compute *= self.throttle
        w = np.float32(msg["weight"])   # gradients weighted by samples: sum = global-batch mean
        flat = pack([*grads, np.float32([loss])])
        flat *= w
        t1, sent0 = time.perf_counter(), self.links.bytes_sent
        allreduce(self.links, flat, job.step)
        ar = time.perf_counter() - t1
        job.prev = (hostpool.copy(job.params), hostpool.copy(job.opt.state), job.opt.t)
        job.opt.update(job.params, unpack(flat[:-1], job.shapes))
        job.step += 1
        m, n = self.metrics, self.links.world
        m.steps.inc()
        m.step_seconds.set(time.perf_counter() - t0)
        m.compute_seconds.set(compute)
        m.samples_per_second.set(b / compute if compute else 0)
        m.allreduce_bytes.inc(self.links.bytes_sent - sent0)
        m.allreduce_bandwidth.set(2 * (n - 1) / n * flat.nbytes / ar if n > 1 and ar else 0)
        return "step_done", {"step": job.step, "loss": float(flat[-1]), "compute_s": compute, "allreduce_s": ar,
                             "bytes": self.links.bytes_sent - sent0, "digest": job.digest()}

    def _on_state(self, msg):
        job = self._need_job(msg)
        return "state_data", {"step": job.step, "names": job.names, "n_state": len(job.opt.state)}, \
            [a.copy() for a in (*job.params, *job.opt.state)]   # sent zero-copy; the next step mutates in place

    def _on_stop(self, msg):
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
    a = ap.parse_args(argv)
    logging.basicConfig(filename=a.log, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    secret = env("ENGINE_NODE_SECRET")
    if not secret:
        print("engine-node: set ENGINE_NODE_SECRET (the cluster's shared secret); refusing to run unauthenticated",
              file=sys.stderr)
        return 2
    if a.device:
        try:
            log.info("device %s", program.check_device(a.device))
        except program.ProgramError as e:
            print(f"engine-node: {e}", file=sys.stderr)
            return 2
    node = NodeDaemon(a.listen, secret.encode(), device=a.device, data_dir=a.data, metrics_addr=a.metrics,
                      throttle=a.throttle, throttle_from=a.throttle_from, advertise=a.advertise, peer_timeout=a.peer_timeout,
                      max_message_bytes=int(a.max_message_mb * 2**20), data_port=a.data_port)
    signal.signal(signal.SIGTERM, lambda *_: setattr(node, "stopping", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(node, "stopping", True))
    faulthandler.register(signal.SIGUSR1)   # `kill -USR1 <pid>` prints every thread's stack
    print(f"engine-node ready control={node.endpoint} data={node.links.endpoint} metrics={node.metrics_url}", flush=True)
    node.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
