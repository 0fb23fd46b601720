"""Driver API: Cluster(addresses, secret=...).fit(model, loss_fn, optimizer_spec, data, ...).

The driver traces the training step once per local batch size and ships IR, weights
and the dataset; nodes compute, all-reduce among themselves and update identically.
The driver only schedules: it sends each step's sample indices, watches heartbeats,
balances the global batch by measured throughput, and re-forms the ring when a node
dies or joins.  Steps are atomic: a step the ring abandoned is rolled back and re-run
with the survivors on the same global batch.
"""
from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import zmq

from . import auth, program, wire
from .optimizer import check_spec

log = logging.getLogger("cluster.driver")


def wants_host_optimizer(model, infos) -> bool:
    """An engine job's optimizer goes to each node's host (numpy, bitwise identical on any
    device) when the nodes' devices differ: fused updates on different devices may round
    differently, and the weights checksum would then stop the job.  Reference models
    always train on the host anyway."""
    from .reference import ReferenceMLP
    if isinstance(model, ReferenceMLP):
        return False
    return len({i.get("device") for i in infos}) > 1


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Sample order of one epoch; global batch i is order[i*B:(i+1)*B] (drop last)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class ClusterError(RuntimeError):
    pass


class WeightsDiverged(ClusterError):
    """Nodes hold different weights after a step: a bug, never retried."""


class NonFiniteGradients(ClusterError):
    """The summed gradients of a step hold NaN or Inf: the nodes refused to apply them.
    Re-running the same batch would give the same numbers, so it is never retried."""


class NodesLost(Exception):
    def __init__(self, nodes):
        super().__init__(", ".join(n.address for n in nodes))
        self.nodes = nodes


class NodeLink:
    """The driver's connection to one node."""
    _ids = itertools.count(1)

    def __init__(self, ctx, address: str, secret: bytes):
        self.address, self.secret = address, secret
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, wire.SOCKET_MAX_FRAME)
        # our own routing id: the node's session for us survives a reconnect of this socket
        self.sock.setsockopt(zmq.ROUTING_ID, secrets.token_bytes(16))
        auth.control_client(self.sock, secret, address)
        self.sock.connect(address)
        self.session = None                           # the node's token for this connection, from hello
        self.nonces: dict[int, str] = {}              # request id -> its nonce, which the reply must name
        self.replay = wire.ReplayGuard()
        self.replies: dict[int, wire.Message] = {}
        self.last_seen, self.alive, self.why = time.monotonic(), True, ""
        self.heard, self.missed = True, 0
        self.info, self.tp, self.batch, self.programs = None, None, 0, set()

    def send(self, type: str, fields=None, tensors=(), table=None) -> int:
        rid, nonce = next(self._ids), secrets.token_hex(16)
        fields = {**(fields or {}), "id": rid, "n": nonce, **({"session": self.session} if self.session else {})}
        self.sock.send_multipart(wire.encode(type, fields, tensors, table, secret=self.secret), copy=False)
        self.nonces[rid] = nonce
        return rid

    def close(self):
        self.sock.close(linger=0)


@dataclass
class FitResult:
    params: dict
    step: int
    history: list = field(default_factory=list)   # per step: loss, world, shares, times
    events: list = field(default_factory=list)    # {"t": unix time, "text": ...}: membership, rebalances


class Cluster:
    def __init__(self, addresses, secret, *, heartbeat_s: float = 0.5, missed: int = 4, step_timeout: float = 120.0,
                 rebalance_tolerance: float = 0.1, batch_multiple: int = 1, seed: int = 0, max_retries: int = 3,
                 host_optimizer: bool | None = None):
        """heartbeat_s * missed: how long a silent node lives.  batch_multiple: local batches
        are multiples of it (except one remainder), bounding how many batch sizes, hence
        programs, each node compiles as the balance moves."""
        self.addresses = list(addresses)
        self.secret = auth.check_secret(secret)
        self.banned: dict[str, str] = {}   # address -> why: dropped for misbehaving, never re-admitted
        self.heartbeat_s, self.missed, self.step_timeout = heartbeat_s, missed, step_timeout
        self.tolerance, self.seed, self.max_retries = rebalance_tolerance, seed, max_retries
        # engine jobs: optimizer on each node's device (False), on its host (True), or None:
        # on the host only when the nodes' devices differ (see wants_host_optimizer)
        self.host_optimizer = host_optimizer
        self._host_opt = False
        self.multiple = max(1, int(batch_multiple))
        self.ctx = zmq.Context.instance()
        self.nodes: list[NodeLink] = []
        self._joining: list[str] = []
        self._lock = threading.Lock()
        self._next_ping = 0.0
        self.events: list[str] = []

    def add(self, address: str) -> None:
        """Ask a node to join; it enters the ring at the next step boundary."""
        with self._lock:
            self._joining.append(address)

    # --- messaging ---------------------------------------------------------------------
    def _event(self, text: str) -> None:
        log.info(text)
        self.events.append({"t": time.time(), "text": text})

    def _pump(self, timeout_s: float) -> None:
        now = time.monotonic()
        if now >= self._next_ping:
            # Silence is counted in pings we sent and got nothing back for, not in seconds:
            # a driver that was itself busy (or starved of CPU) must not blame its nodes.
            for n in self.nodes:
                if n.alive and n.session:       # before hello's reply there is no session to ping in
                    n.missed = 0 if n.heard else n.missed + 1
                    n.heard = False
                    if n.missed >= self.missed:
                        self._dead(n, f"silent for {n.missed} heartbeats ({time.monotonic() - n.last_seen:.1f}s)")
                    else:
                        n.send("ping", {"t": time.time()})
            self._next_ping = now + self.heartbeat_s
        poller = zmq.Poller()
        for n in self.nodes:
            poller.register(n.sock, zmq.POLLIN)
        socks = dict(poller.poll(int(timeout_s * 1000)))
        for n in self.nodes:
            while n.sock in socks and n.sock.poll(0):
                try:
                    msg = wire.decode(n.sock.recv_multipart(), secret=self.secret)
                    n.replay.check(msg)
                    if "re" in msg.fields and (msg["re"] not in n.nonces or n.nonces[msg["re"]] != msg.fields.get("rn")):
                        raise wire.WireError("unbound", f"reply to request {msg['re']} names another request's nonce")
                except wire.WireError as e:
                    log.warning("refused a message from %s: %s", n.address, e)
                    continue
                n.last_seen, n.heard = time.monotonic(), True
                if msg.type == "bye":
                    self._dead(n, f"said bye ({msg['reason']})")
                elif "re" in msg.fields:
                    del n.nonces[msg["re"]]
                    if msg.type != "pong":      # heartbeats are answered by arriving at all
                        n.replies[msg["re"]] = msg
                    self._judge(n, msg)

    def _judge(self, n: NodeLink, m: wire.Message) -> None:
        """Drop a node at once on a reply that shows it cannot go on: one a neighbour says
        lied in the all-reduce plan agreement (waiting would only time out, and a retry
        would meet the same lie), or one that cancelled the job over its time budget."""
        if m.type == "step_failed" and m.fields.get("code") == "plan_mismatch":
            for liar in self.nodes:
                if liar.alive and liar.info and liar.info.get("data") == m.fields.get("peer"):
                    why = f"disagreed with {n.address} in the all-reduce plan agreement: {m['message']}"
                    self.banned[liar.address] = why
                    self._dead(liar, why)
        elif m.type == "error" and m.fields.get("code") == "over_budget":
            self._dead(n, m["message"])

    def _dead(self, n: NodeLink, why: str) -> None:
        if n.alive:
            n.alive, n.why = False, why
            self._event(f"node {n.address} lost: {why}")

    def _wait(self, pending: dict, timeout_s: float, what: str) -> dict:
        """{node: request id} -> {node: reply}.  Raises NodesLost as soon as one dies."""
        deadline, out = time.monotonic() + timeout_s, {}
        while True:
            for n, rid in pending.items():
                if n not in out and rid in n.replies:
                    out[n] = n.replies.pop(rid)
            dead = [n for n in pending if not n.alive]
            if dead:
                raise NodesLost(dead)
            if len(out) == len(pending):
                return out
            if time.monotonic() > deadline:
                late = [n.address for n in pending if n not in out]
                raise ClusterError(f"{what}: no reply from {late} within {timeout_s:.0f}s")
            self._pump(0.02)

    def _call(self, nodes, type: str, fields_of, timeout_s: float = 60.0, tensors_of=None, table=None) -> dict:
        pending = {n: n.send(type, fields_of(n), tensors_of(n) if tensors_of else (), table) for n in nodes}
        return self._check(type, self._wait(pending, timeout_s, type))

    @staticmethod
    def _check(type: str, replies: dict) -> dict:
        for n, m in replies.items():
            if m.type == "error":
                raise ClusterError(f"node {n.address} refused {type}: {m['code']}: {m['message']}")
        return replies

    # --- membership and balance -----------------------------------------------------------
    def _hello(self, address: str) -> NodeLink:
        if address in self.banned:
            raise ClusterError(f"node {address} was dropped from this job: {self.banned[address]}")
        n = NodeLink(self.ctx, address, self.secret)
        self.nodes.append(n)
        try:
            n.info = self._call([n], "hello", lambda _: {}, timeout_s=10)[n].fields
            n.session = n.info.get("session")
        except (ClusterError, NodesLost) as e:
            self.nodes.remove(n)
            n.close()
            why = f"silent for {self.heartbeat_s * self.missed:.1f}s" if isinstance(e, NodesLost) else str(e)
            raise ClusterError(f"node {address} did not answer hello ({why}): is engine-node running there, "
                               "reachable, and started with the same ENGINE_NODE_SECRET?") from None
        return n

    def _shares(self, nodes, B: int) -> list[int]:
        measured = [n for n in nodes if n.tp]
        ratio = np.mean([n.tp / n.info["speed"] for n in measured]) if measured else 1.0
        tp = np.array([n.tp or n.info["speed"] * ratio for n in nodes], np.float64)
        units = B // self.multiple if B >= self.multiple * len(nodes) else B
        raw = units * tp / tp.sum()
        shares = np.maximum(1, np.floor(raw)).astype(int)
        while shares.sum() > units:      # minimum of one unit each may overshoot
            shares[np.argmax(shares)] -= 1
        for i in np.argsort(-(raw - np.floor(raw)))[:units - shares.sum()]:   # largest remainders
            shares[i] += 1
        shares *= B // units
        shares[np.argmax(tp)] += B - shares.sum()   # what does not divide goes to the fastest
        return [int(s) for s in shares]

    def _ensure_programs(self, nodes) -> None:
        need = [n for n in nodes if n.batch not in n.programs]
        if need:
            self._call(need, "program", lambda n: {"job": self.job, "batch": n.batch, "program": self._program(n.batch)},
                       timeout_s=self.step_timeout)
            for n in need:
                n.programs.add(n.batch)

    def _program(self, b: int) -> dict:
        if b not in self._programs:
            self._programs[b] = program.trace(self.model, self.loss_fn, self.x[:b], self.y[:b]).to_json()
        return self._programs[b]

    def _form_ring(self, step: int) -> None:
        live = [n for n in self.nodes if n.alive]
        for n in self.nodes:
            if not n.alive:
                n.close()
        self.nodes = live
        if not live:
            raise ClusterError(f"no nodes left at step {step}")
        self.gen += 1
        for n, b in zip(live, self._shares(live, self.B)):
            n.batch = b
        self._ensure_programs(live)
        peers = [n.info["data"] for n in live]
        self._call(live, "ring", lambda n: {"job": self.job, "gen": self.gen, "rank": live.index(n),
                                            "peers": peers, "step": step})
        self._event(f"ring gen {self.gen} at step {step}: {len(live)} node(s), shares {[n.batch for n in live]}")

    def _ship_job(self, nodes, params: list, state: list, step: int) -> None:
        fields = {"job": self.job, "optimizer": self.optimizer, "step": step, "names": self.names, "n_state": len(state)}
        if self._host_opt:
            fields["host_optimizer"] = True
        if self.dataset_name:   # nodes read their own copy; the hash proves it is the same
            fields["dataset"] = {"name": self.dataset_name, "digest": wire.table_digest({"x": self.x, "y": self.y})}
        self._call(nodes, "job", lambda n: fields, tensors_of=lambda n: [*params, *state],
                   table=None if self.dataset_name else {"x": self.x, "y": self.y})

    def _state(self) -> tuple[list, list, int]:
        n = self.nodes[0]
        m = self._call([n], "state", lambda _: {"job": self.job})[n]
        k = len(m["names"])
        return [np.array(t) for t in m.tensors[:k]], [np.array(t) for t in m.tensors[k:]], m["step"]

    def params(self) -> dict:
        """The job's current weights, name -> array, fetched from a node.  Call it between
        steps, e.g. from fit's on_step (to evaluate or checkpoint while training)."""
        if not self.nodes:
            raise ClusterError("no job is running: params() is for use inside fit (on_step)")
        params, _, _ = self._state()
        return dict(zip(self.names, params))

    def _admit(self, step: int) -> None:
        with self._lock:
            joining, self._joining = self._joining, []
        if not joining:
            return
        params, state, at = self._state()
        for address in joining:
            try:
                n = self._hello(address)
            except ClusterError as e:
                self._event(f"join refused: {e}")
                continue
            others = [m for m in self.nodes if m is not n]
            if not self._host_opt and wants_host_optimizer(self.model, [m.info for m in others + [n]]):
                self.nodes.remove(n)
                n.close()
                self._event(f"join refused: node {address}'s device ({n.info.get('device')}) differs from the "
                            "job's, whose optimizer runs on the devices (start such jobs with all device kinds, "
                            "or Cluster(host_optimizer=True))")
                continue
            self._ship_job([n], params, state, at)
            self._event(f"node {address} joins at step {step}")
        self._form_ring(step)

    def _rebalance(self) -> None:
        ideal = self._shares(self.nodes, self.B)
        moved = sum(abs(a - n.batch) for a, n in zip(ideal, self.nodes)) / 2
        if moved > self.tolerance * self.B:
            for n, b in zip(self.nodes, ideal):
                n.batch = b
            self._ensure_programs(self.nodes)
            self._event(f"rebalanced: shares {ideal}")

    # --- training -------------------------------------------------------------------------
    def _step(self, step: int, idx: np.ndarray) -> dict:
        nodes, off, pending = list(self.nodes), 0, {}
        for n in nodes:
            part = idx[off:off + n.batch]
            off += n.batch
            pending[n] = n.send("step", {"job": self.job, "gen": self.gen, "step": step, "batch": n.batch,
                                         "weight": n.batch / self.B}, [part.astype(np.int64)])
        replies = self._wait(pending, self.step_timeout, f"step {step}")
        bad = {n.address: f"{m.type}: {m.fields.get('message')}" for n, m in replies.items() if m.type != "step_done"}
        if any(m.type == "error" and m.fields.get("code") == "nonfinite" for m in replies.values()):
            raise NonFiniteGradients(f"step {step}: the nodes refused NaN/Inf gradients, weights kept: {bad}")
        if bad:
            raise ClusterError(f"step {step} failed on {bad}")
        # nodes send a weights checksum every --digest-every steps (a download on the device path)
        digests = {m.fields["digest"] for m in replies.values() if "digest" in m.fields}
        if len(digests) > 1:
            raise WeightsDiverged(f"step {step}: weights diverged across nodes: {digests}")
        for n, m in replies.items():
            t = max(m["compute_s"], 1e-6)
            n.tp = n.batch / t if n.tp is None else 0.5 * n.tp + 0.5 * n.batch / t
        m0 = replies[nodes[0]]
        return {"step": step + 1, "loss": m0["loss"], "world": len(nodes), "shares": [n.batch for n in nodes],
                "compute_s": [replies[n]["compute_s"] for n in nodes], "allreduce_s": m0["allreduce_s"]}

    def _recover(self, step: int, why) -> None:
        self._event(f"step {step} abandoned ({why}); re-forming the ring")
        for n in self.nodes:
            if n.alive:
                n.send("abort", {"job": self.job})
        for _ in range(len(self.nodes)):
            try:
                return self._form_ring(step)   # nodes roll back to `step` if they had finished it
            except NodesLost as e:             # another one went while we re-formed: drop it too
                self._event(f"lost {e} while re-forming")
        raise ClusterError(f"could not re-form the ring at step {step}")

    def fit(self, model, loss_fn, optimizer_spec: dict, dataset_arrays, *, epochs: int = 1, global_batch: int = 64,
            max_steps: int | None = None, on_step=None, dataset_name: str | None = None) -> FitResult:
        """Train `model` data-parallel; returns the final weights (also loaded into the model).

        dataset_arrays: (x, y) or {"x": x, "y": y}.  Its rows travel to every node in the
        job as Arrow IPC, unless dataset_name is given: then each node reads
        <ENGINE_NODE_DATA>/<dataset_name>.arrow (see wire.save_table) and checks its hash.
        on_step(record) runs after every step, in the driver (it may call self.add)."""
        self.dataset_name = dataset_name
        x, y = (dataset_arrays["x"], dataset_arrays["y"]) if isinstance(dataset_arrays, dict) else dataset_arrays
        self.x, self.y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64)
        self.model, self.loss_fn, self.B = model, loss_fn, int(global_batch)
        self.optimizer = check_spec(dict(optimizer_spec))
        self.job, self.gen, self._programs = uuid.uuid4().hex[:12], 0, {}
        params = program.params_of(model)
        self.names = list(params)
        per_epoch = len(self.x) // self.B
        total = min(epochs * per_epoch, max_steps or epochs * per_epoch)
        if per_epoch == 0:
            raise ClusterError(f"global batch {self.B} is larger than the dataset ({len(self.x)})")
        history, step, perm = [], 0, None
        self.nodes, self.events = [], []
        try:
            for a in self.addresses:
                self._hello(a)
            if self.B < len(self.nodes):
                raise ClusterError(f"global batch {self.B} < {len(self.nodes)} nodes")
            self._host_opt = (self.host_optimizer if self.host_optimizer is not None
                              else wants_host_optimizer(model, [n.info for n in self.nodes]))
            self._ship_job(self.nodes, list(params.values()), [], 0)
            self._form_ring(0)
            while step < total:
                epoch, i = divmod(step, per_epoch)
                if i == 0 or perm is None:
                    perm = epoch_order(len(self.x), self.seed, epoch)
                idx = perm[i * self.B:(i + 1) * self.B]
                for attempt in range(self.max_retries + 1):
                    try:
                        rec = self._step(step, idx)
                        break
                    except (NodesLost, ClusterError) as e:
                        if attempt == self.max_retries or isinstance(e, (WeightsDiverged, NonFiniteGradients)):
                            raise
                        self._recover(step, e)
                step += 1
                rec["epoch"] = epoch
                history.append(rec)
                if on_step:
                    on_step(rec)
                try:
                    self._admit(step)
                    self._rebalance()
                except NodesLost as e:   # lost one while reshaping: re-form without it
                    self._recover(step, e)
            params_out, _, at = self._state()
            self._call(self.nodes, "stop", lambda n: {})
            model.load_state_dict(dict(zip(self.names, params_out)))
        finally:
            for n in self.nodes:
                n.close()
            self.nodes = []
        return FitResult(dict(zip(self.names, params_out)), at, history, list(self.events))
