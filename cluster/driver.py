"""Driver API: Cluster(addresses, secret=...).fit(model, loss_fn, optimizer_spec, data, ...).

The driver traces the training step once per local batch size and ships IR, weights
and the dataset; nodes compute, all-reduce among themselves and update identically.
The driver only schedules: it sends each node the data plan and the membership once
(a `run`, cluster/runs.py), and the nodes step on their own, in lockstep through their
ring, reporting losses and timings asynchronously.  The driver watches heartbeats,
reads the reports, balances the global batch by measured throughput and re-forms the
ring when a node dies or joins: it stops the run at a step boundary (a `halt`, or an
`abort` when the ring broke), rolls the survivors back to a step every one of them can
reach (their device snapshot) and re-runs from there on the same global batches.
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
from zmq.utils import monitor as zmq_monitor

from . import auth, program, runs, wire
from . import transport as tp
from .optimizer import check_spec
from .runs import epoch_order  # noqa: F401  (its home was here; tests import it from here)

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


class ClusterError(RuntimeError):
    pass


class WeightsDiverged(ClusterError):
    """Nodes hold different weights after a step: a bug, never retried."""


class NonFiniteGradients(ClusterError):
    """The summed gradients of a step hold NaN or Inf: the nodes refused to apply them.
    Re-running the same batch would give the same numbers, so it is never retried."""


class NodesLost(Exception):
    def __init__(self, nodes):
        super().__init__(", ".join(f"{n.address} ({n.why})" if n.why else n.address for n in nodes))
        self.nodes = nodes


class NodeLink:
    """The driver's connection to one node."""
    _ids = itertools.count(1)

    def __init__(self, ctx, address: str, secret: bytes, heartbeat_s: float, missed: int):
        self.address, self.secret = address, secret
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, wire.SOCKET_MAX_FRAME)
        # ZMTP heartbeats are answered by the node's libzmq I/O thread, which needs no GIL: a
        # node whose Python is held by a long C call (PoCL compiles a kernel's work-group
        # function inside clEnqueueNDRangeKernel) keeps its connection, a stopped or dead one
        # loses it.  The monitor tells us which (see Cluster._pump).
        self.sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(heartbeat_s * 1000)))
        self.sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(heartbeat_s * missed * 1000)))
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.link_up = False
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

    def read_link_events(self) -> None:
        while self.monitor.poll(0):
            event = zmq_monitor.recv_monitor_message(self.monitor)["event"]
            self.link_up = event == zmq.EVENT_HANDSHAKE_SUCCEEDED

    def close(self):
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)


@dataclass
class FitResult:
    params: dict
    step: int
    history: list = field(default_factory=list)   # per step: loss, world, shares, times (t: when it ended, unix)
    events: list = field(default_factory=list)    # {"t": unix time, "text": ...}: membership, rebalances


class Cluster:
    def __init__(self, addresses, secret, *, heartbeat_s: float = 0.5, missed: int = 4, step_timeout: float = 120.0,
                 rebalance_tolerance: float = 0.1, batch_multiple: int = 1, seed: int = 0, max_retries: int = 3,
                 host_optimizer: bool | None = None, report_s: float = 0.5, transport: str = "float32"):
        """heartbeat_s * missed: how long a silent node lives once its connection is lost too
        (one that still answers ZMTP heartbeats is busy in a long C call: up to step_timeout).  batch_multiple: local batches
        are multiples of it (except one remainder), bounding how many batch sizes, hence
        programs, each node compiles as the balance moves.  report_s: how often a node
        reports its steps' losses and timings (0: after every step).  step_timeout: how
        long a run may go without any step reported before the driver gives up on it.
        transport: the type gradients travel in around the ring, "float32" (default, exact),
        "bfloat16" or "float16" ("bf16", "fp16"; summed in float32, cluster/transport.py);
        the loss and the halt vote always travel in float32."""
        self.addresses = list(addresses)
        self.secret = auth.check_secret(secret)
        self.banned: dict[str, str] = {}   # address -> why: dropped for misbehaving, never re-admitted
        self.heartbeat_s, self.missed, self.step_timeout = heartbeat_s, missed, step_timeout
        self.tolerance, self.seed, self.max_retries = rebalance_tolerance, seed, max_retries
        # engine jobs: optimizer on each node's device (False), on its host (True), or None:
        # on the host only when the nodes' devices differ (see wants_host_optimizer)
        self.host_optimizer = host_optimizer
        self.report_s = float(report_s)
        self.transport = tp.canonical(transport)   # ValueError naming the choices
        self._runs = None          # {node: id of its run request} while a run is in flight
        self._run_replies: dict = {}
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
            # A node whose connection still answers ZMTP heartbeats is busy, not gone: it
            # gets until step_timeout before it is given up.
            for n in self.nodes:
                if n.alive and n.session:       # before hello's reply there is no session to ping in
                    n.read_link_events()
                    n.missed = 0 if n.heard else n.missed + 1
                    n.heard = False
                    if n.missed >= self.missed and (not n.link_up or n.missed * self.heartbeat_s >= self.step_timeout):
                        state = "its connection still up" if n.link_up else "its connection down"
                        self._dead(n, f"silent for {n.missed} heartbeats ({time.monotonic() - n.last_seen:.1f}s, {state})")
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
                elif msg.type == "progress":
                    self._progress(n, msg)
                elif "re" in msg.fields:
                    del n.nonces[msg["re"]]
                    if msg.type != "pong":      # heartbeats are answered by arriving at all
                        n.replies[msg["re"]] = msg
                    self._judge(n, msg)

    def _judge(self, n: NodeLink, m: wire.Message) -> None:
        """Drop a node at once on a reply that shows it cannot go on: one a neighbour says
        lied in the all-reduce plan agreement (waiting would only time out, and a retry
        would meet the same lie), or one that cancelled the job over its time budget."""
        if m.type in ("step_failed", "run_done") and m.fields.get("code") == "plan_mismatch":
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
        n = NodeLink(self.ctx, address, self.secret, self.heartbeat_s, self.missed)
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
        """Every node holds a program for each of its micro-batch sizes (one per size a round)."""
        while need := {n: min(m) for n in nodes
                       if (m := set(runs.micro_sizes(n.batch, self.accumulate)) - n.programs)}:
            self._call(need, "program", lambda n: {"job": self.job, "batch": need[n], "program": self._program(need[n])},
                       timeout_s=self.step_timeout)
            for n, b in need.items():
                n.programs.add(b)

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
        if self.transport != "float32":   # absent: float32, which nodes of any version understand
            fields["transport"] = self.transport
        if self.dataset_name:   # nodes read their own copy; the hash proves it is the same
            fields["dataset"] = {"name": self.dataset_name, "digest": wire.table_digest({"x": self.x, "y": self.y})}
        self._call(nodes, "job", lambda n: fields, tensors_of=lambda n: [*params, *state],
                   table=None if self.dataset_name else {"x": self.x, "y": self.y})

    def _state(self) -> tuple[list, list, int]:
        n = self.nodes[0]
        m = self._call([n], "state", lambda _: {"job": self.job})[n]
        k = len(m["names"])
        return [np.array(t) for t in m.tensors[:k]], [np.array(t) for t in m.tensors[k:]], m["step"]

    def     params(self) -> dict:
        """The job's current weights, name -> array, fetched from a node.  Call it from
        fit's on_step (to evaluate or checkpoint while training).  Nodes run ahead of the
        records on_step sees: a call stops them at their next step boundary, whose
        weights it returns (a later step than the record's); the weights of an exact step
        are those at the end of a fit(sync_every=...) segment."""
        if not self.nodes:
            raise ClusterError("no job is running: params() is for use inside fit (on_step)")
        if self._runs is not None and len(self._run_replies) < len(self._runs):
            self._stop_run()     # the nodes run ahead of on_step: stop them at the next step boundary
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
    def _progress(self, n: NodeLink, m: wire.Message) -> None:
        """A node's report of steps it finished: losses (the ring's sum, the same on every
        rank), its compute and all-reduce times, weight checksums."""
        ring = self._ring
        if m["job"] != self.job or m["gen"] != self.gen or n not in ring:
            return                                    # a report from a ring that is gone
        loss, compute, ar = m["loss"], m["compute"], m["allreduce"]
        ends = m.fields.get("t") or [None] * len(loss)
        if not (len(loss) == len(compute) == len(ar) == len(ends)) or \
                not all(isinstance(v, (int, float)) for v in loss + compute + ar + [e or 0 for e in ends]):
            log.warning("refused a malformed progress report from %s", n.address)
            return
        rank, world, self._last_progress = ring.index(n), len(ring), time.monotonic()
        for i, (lo, c, a, e) in enumerate(zip(loss, compute, ar, ends)):
            s = m["first"] + i
            if s < self._next:
                continue
            rec = self._pending.setdefault(s, {"step": s + 1, "loss": lo, "world": world, "t": None,
                                               "shares": [x.batch for x in ring], "compute_s": [None] * world,
                                               "allreduce_s": [None] * world})
            rec["compute_s"][rank], rec["allreduce_s"][rank] = c, a
            if e is not None:        # when the step ended (unix time) on its slowest rank
                rec["t"] = e if rec["t"] is None else max(rec["t"], e)
            t = max(c, 1e-6)
            n.tp = n.batch / t if n.tp is None else 0.5 * n.tp + 0.5 * n.batch / t
        for pair in m.fields.get("digests", []):
            if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is int and isinstance(pair[1], str)):
                continue
            step, digest = pair
            seen = self._digests.setdefault(step, {})
            seen[n] = digest
            if len(seen) == world:
                if len(set(seen.values())) > 1 and not self._diverged:    # the first step that differs
                    self._diverged = f"after step {step}: weights diverged across nodes: {sorted(set(seen.values()))}"
                del self._digests[step]

    def _deliver(self) -> None:
        """Records of steps every rank reported, in step order, to the history and on_step."""
        if self._delivering:          # on_step called back into the driver (params, add)
            return
        self._delivering = True
        try:
            while (rec := self._pending.get(self._next)) is not None and None not in rec["compute_s"]:
                self._emit(self._pending.pop(self._next))
        finally:
            self._delivering = False

    def _emit(self, rec: dict) -> None:
        rec["allreduce_s"] = rec["allreduce_s"][0]
        rec["epoch"] = (rec["step"] - 1) // self.per_epoch
        self._next = rec["step"]
        self.history.append(rec)
        if self.on_step:
            self.on_step(rec)
        if not self._want_rebalance and self._rebalance_moves() > self.tolerance * self.B:
            self._want_rebalance = True

    def _rebalance_moves(self) -> float:
        ideal = self._shares(self.nodes, self.B)
        return sum(abs(a - n.batch) for a, n in zip(ideal, self.nodes)) / 2

    def _collect_runs(self) -> None:
        for n, rid in self._runs.items():
            if n not in self._run_replies and rid in n.replies:
                self._run_replies[n] = n.replies.pop(rid)

    def _stop_run(self) -> None:
        """Halt the run in flight at its next step boundary and wait until every node said so."""
        for n, rid in self._runs.items():
            if n not in self._run_replies and n.alive:
                n.send("halt", {"job": self.job, "run": rid})
        self._halted = True
        self._await_runs(self.step_timeout, abort=False)

    def _await_runs(self, timeout_s: float, abort: bool) -> None:
        """Wait for the run replies of the live nodes.  abort=False: a death raises
        NodesLost; abort=True (recovering): the dead are skipped, and the silent dropped."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._collect_runs()
            if not abort and (dead := [n for n in self._runs if not n.alive]):
                raise NodesLost(dead)
            waiting = [n for n in self._runs if n not in self._run_replies and n.alive]
            if not waiting:
                return
            if time.monotonic() > deadline:
                if not abort:
                    raise ClusterError(f"run: no answer from {[n.address for n in waiting]} within {timeout_s:.0f}s")
                for n in waiting:
                    self._dead(n, f"did not stop its run within {timeout_s:.0f}s of an abort")
                return
            self._pump(0.02)

    def _end_runs(self) -> None:
        """fit is leaving with a run in flight (an error): stop the nodes at their next step
        boundary (halt; abort for a ring that waits on a lost peer) instead of letting them
        train on to the run's end, which would also keep the next job waiting."""
        for n, rid in (self._runs or {}).items():
            if n.alive and n not in self._run_replies:
                n.send("halt", {"job": self.job, "run": rid})
                n.send("abort", {"job": self.job})
                n.sock.setsockopt(zmq.LINGER, 1000)     # let them leave before the socket closes

    def _run(self, start: int, until: int) -> int:
        """Steps [start, until) on the nodes' own; returns the step they stopped at
        (until, or earlier when halted for a join, a rebalance or params())."""
        ring = self._ring = list(self.nodes)
        fields = {"job": self.job, "gen": self.gen, "step": start, "until": until, "seed": self.seed, "batch": self.B,
                  "shares": [n.batch for n in ring], "accumulate": self.accumulate, "report_s": self.report_s}
        self._run_replies, self._halted = {}, False
        self._runs = {n: n.send("run", fields) for n in ring}
        self._last_progress = time.monotonic()
        while True:
            self._collect_runs()
            dead = [n for n in ring if not n.alive]
            if dead:
                raise NodesLost(dead)
            if self._diverged:
                raise WeightsDiverged(self._diverged)
            if len(self._run_replies) == len(ring):
                break
            if any(m.type != "run_done" or m["why"] == "aborted" for m in self._run_replies.values()):
                break                              # the ring broke: no need to wait for the others here
            if not self._halted and (self._joining or self._want_rebalance):
                for n, rid in self._runs.items():
                    if n not in self._run_replies:
                        n.send("halt", {"job": self.job, "run": rid})
                self._halted = True
            if time.monotonic() - self._last_progress > self.step_timeout + self.report_s:
                raise ClusterError(f"run from step {start}: no step finished within {self.step_timeout:.0f}s")
            self._pump(0.02)
            self._deliver()
        replies = self._run_replies
        bad = {n.address: f"{m.type}: {m.fields.get('why', m.fields.get('code'))}: {m.fields.get('message')}"
               for n, m in replies.items() if m.type != "run_done" or m["why"] == "aborted"}
        if any(m.type == "error" and m.fields.get("code") == "nonfinite" for m in replies.values()):
            raise NonFiniteGradients(f"the nodes refused NaN/Inf gradients, weights kept: {bad}")
        if bad:
            raise ClusterError(f"run from step {start} failed on {bad}")
        stopped = {m["step"] for m in replies.values()}
        if len(stopped) != 1:
            raise ClusterError(f"run from step {start}: nodes stopped at different steps {sorted(stopped)}")
        self._runs = None
        step = stopped.pop()
        self._deliver()
        self._settle(step)
        if self._diverged:
            raise WeightsDiverged(self._diverged)
        return step

    def _settle(self, step: int) -> None:
        """History holds exactly the steps before `step`: reports of steps the nodes rolled
        back are dropped, and steps some dead rank never reported go in with what is known."""
        del self.history[step:]
        self._next = len(self.history)
        for s in sorted(k for k in self._pending if k < step):
            rec = self._pending.pop(s)
            if s == self._next:
                rec["compute_s"] = [float("nan") if c is None else c for c in rec["compute_s"]]
                rec["allreduce_s"] = [float("nan") if a is None else a for a in rec["allreduce_s"]]
                self._emit(rec)
        self._pending.clear()
        self._digests.clear()

    @staticmethod
    def _rollback_target(states: dict) -> int:
        """The latest step every node can reach: where it is, or its snapshot."""
        at = min(s for s, _ in states.values())
        for c in sorted({at} | {snap for _, snap in states.values() if 0 <= snap <= at}, reverse=True):
            if all(s == c or snap == c for s, snap in states.values()):
                return c
        raise ClusterError(f"no step every node can roll back to: (step, snapshot) {sorted(states.values())}; "
                           "a node between --snapshot-every snapshots cannot resume (0: rollback off)")

    def _recover(self, why) -> int:
        """Stop what is left of the run, roll every survivor back to a common step and
        re-form the ring there; returns that step."""
        self._event(f"run from step {self.step} stopped ({why}); re-forming the ring")
        if self._runs is not None:
            for n in self._runs:
                if n.alive and n not in self._run_replies:
                    n.send("abort", {"job": self.job})
            self._await_runs(self.step_timeout, abort=True)
            states = {}
            for n, m in self._run_replies.items():
                if not n.alive:
                    continue
                if m.type == "run_done":
                    states[n] = (m["step"], m["snap"])
                else:
                    self._dead(n, f"its run failed: {m.fields.get('code')}: {m.fields.get('message')}")
            self._runs = None
        else:
            states = {n: (self.step, -1) for n in self.nodes if n.alive}
        if not states:
            raise ClusterError(f"no nodes left at step {self.step}")
        step = self._rollback_target(states)
        self._settle(step)
        for _ in range(len(self.nodes)):
            try:
                self._form_ring(step)   # nodes roll back to `step` if they are past it
                return step
            except NodesLost as e:      # another one went while we re-formed: drop it too
                self._event(f"lost {e} while re-forming")
        raise ClusterError(f"could not re-form the ring at step {step}")

    def fit(self, model, loss_fn, optimizer_spec: dict, dataset_arrays, *, epochs: int = 1, global_batch: int = 64,
            max_steps: int | None = None, on_step=None, dataset_name: str | None = None, accumulate: int = 1,
            sync_every: int | None = None) -> FitResult:
        """Train `model` data-parallel; returns the final weights (also loaded into the model).

        dataset_arrays: (x, y) or {"x": x, "y": y}.  Its rows travel to every node in the
        job as Arrow IPC, unless dataset_name is given: then each node reads
        <ENGINE_NODE_DATA>/<dataset_name>.arrow (see wire.save_table) and checks its hash.
        on_step(record) runs in the driver for every step, in order, as the nodes report
        them (it may call self.add, or self.params: see there).  accumulate=k: each node
        cuts its share of a step into k micro-batches and sums their gradients before the
        all-reduce (the same update as one batch: what DDP's no_sync gives).  sync_every=n:
        the nodes stop every n steps until the driver has seen them (exact weights for
        on_step at those steps); None: they run to the end on their own."""
        self.dataset_name = dataset_name
        x, y = (dataset_arrays["x"], dataset_arrays["y"]) if isinstance(dataset_arrays, dict) else dataset_arrays
        self.x, self.y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64)
        self.model, self.loss_fn, self.B = model, loss_fn, int(global_batch)
        self.optimizer = check_spec(dict(optimizer_spec))
        self.accumulate = int(accumulate)
        if not 1 <= self.accumulate <= runs.MAX_ACCUMULATE:
            raise ClusterError(f"accumulate must be in 1..{runs.MAX_ACCUMULATE}, got {accumulate}")
        self.job, self.gen, self._programs = uuid.uuid4().hex[:12], 0, {}
        params = program.params_of(model)
        self.names = list(params)
        self.per_epoch = per_epoch = len(self.x) // self.B
        total = min(epochs * per_epoch, max_steps or epochs * per_epoch)
        if per_epoch == 0:
            raise ClusterError(f"global batch {self.B} is larger than the dataset ({len(self.x)})")
        self.history, self.on_step, self.step = [], on_step, 0
        self._pending, self._digests, self._next, self._ring = {}, {}, 0, []
        self._delivering = self._want_rebalance = False
        self._diverged = None
        self._runs, failures = None, 0
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
            while self.step < total:
                until = total if not sync_every else min(total, (self.step // sync_every + 1) * sync_every)
                try:
                    self.step = self._run(self.step, until)
                    failures = 0
                except (WeightsDiverged, NonFiniteGradients):
                    raise
                except (NodesLost, ClusterError) as e:
                    failures += 1
                    if failures > self.max_retries:
                        raise
                    self.step = self._recover(e)
                    continue
                try:
                    self._admit(self.step)
                    if self._want_rebalance:
                        self._want_rebalance = False
                        self._rebalance()
                except NodesLost as e:   # lost one while reshaping: re-form without it
                    self.step = self._recover(e)
            params_out, _, at = self._state()
            self._call(self.nodes, "stop", lambda n: {})
            model.load_state_dict(dict(zip(self.names, params_out)))
        finally:
            self._end_runs()
            for n in self.nodes:
                n.close()
            self.nodes, self._runs = [], None
        return FitResult(dict(zip(self.names, params_out)), at, list(self.history), list(self.events))
