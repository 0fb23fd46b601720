"""The node's worker thread: job requests (job, program, ring, step, run, state, stop)
run in order, one at a time, each answered through the main thread (NodeDaemon._reply).
A `run` takes many steps on its own (cluster/runs.py) and sends `progress` reports
through the main thread as it goes.
JobHandlers is a mixin of NodeDaemon (cluster/daemon.py) and uses its attributes: the
job, the ring links, the metrics, the budgets and the lock it shares with the watchdog."""
from __future__ import annotations

import ctypes
import logging
import os
import time

import numpy as np

from . import hostpool, program, runs, shmstream
from .allreduce import PlanMismatch, allreduce, pack, unpack
from .job import Job, JobError
from .optimizer import OptimizerError
from .ring import PeerLost

log = logging.getLogger("engine-node")


def _stall_as_a_compiler_would() -> None:
    """ENGINE_NODE_STALL_S, a test hook (tests/cluster/test_membership.py): hold the GIL that
    many seconds while a program is made, as PoCL does when it compiles a work-group function
    inside a launch; the node's Python then answers no ping, but its connection does."""
    seconds = float(os.environ.get("ENGINE_NODE_STALL_S") or 0)
    if seconds > 0:
        ctypes.PyDLL(None).sleep(int(seconds))     # a PyDLL call keeps the GIL


AUTO_OVERLAP_BYTES = 16 << 20


class JobHandlers:
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
        _stall_as_a_compiler_would()
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
                job.dev.forward_backward(runner, job.x[idx], job.y[idx], np.empty(sum(job.dev.sizes) + 1, np.float32),
                                         weight=0.5)      # any weight but 1: builds the weighting kernels too
                job.dev.local_step(runner, job.x[idx], job.y[idx])   # a ring of one's path: its check kernels
                job.dev.grads_finite()      # a ring's: the check of the reduced gradients (built once per job)
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
        if job.step != step:     # the driver rolls the ring back to a step every member can reach
            if job.snap_step() != step:
                why = f" (device snapshot at step {job.snap_step()}, taken every {self.snapshot_every})" if job.dev else ""
                raise JobError("bad_step", f"node is at step {job.step}, cannot resume at {step}{why}")
            if job.dev:
                job.step = job.dev.restore()
            else:
                job.params, job.opt.state, job.opt.t = job.prev
                job.step = step
        job.prev = None
        self.links.cancel.clear()
        self.links.connect(msg["gen"], rank, peers)
        if job.dev and self.snapshot_every and len(peers) > 1:   # every member can roll back to where the ring formed
            job.dev.snapshot(job.step)
        elif job.dev and job.dev.snap and job.dev.snap[0] != job.step:   # never roll back past a formed ring
            job.dev.snap = (None, job.dev.snap[1])
        return "ok", {"step": job.step}

    def _on_step(self, ident, msg):
        """One step the driver deals by hand (its indices and weight in the message)."""
        job, b = self._need_job(msg), msg["batch"]
        if msg["gen"] != self.links.gen or msg["step"] != job.step:
            raise JobError("bad_step", f"step {msg['step']} gen {msg['gen']}: node is at step {job.step} gen {self.links.gen}")
        idx = msg.tensors[0] if len(msg.tensors) == 1 else None
        if b not in job.runners or idx is None or idx.dtype != np.int64 or idx.shape != (b,):
            raise JobError("bad_step", f"need a program for batch {b} and {b} int64 indices")
        if b and (idx.min() < 0 or idx.max() >= len(job.x)) or not 0 < msg["weight"] <= 1:
            raise JobError("bad_step", "indices out of range or weight not in (0, 1]")
        sent0 = self.links.bytes_sent
        loss, compute, ar, _, _ = self._train_step(job, [(idx, float(msg["weight"]))], False, snapshot_alone=True)
        return "step_done", {"step": job.step, "loss": loss, "compute_s": compute, "allreduce_s": ar,
                             "bytes": self.links.bytes_sent - sent0} | self._digest(job)

    def _digest_due(self, job) -> bool:
        return bool(self.digest_every) and job.step % self.digest_every == 0 and self.links.world > 1

    def _digest(self, job) -> dict:
        return {"digest": job.digest()} if self._digest_due(job) else {}

    def _on_run(self, ident, msg):
        """Steps [step, until) on the node's own, in lockstep with the ring (cluster/runs.py)."""
        job = self._need_job(msg)
        if msg["gen"] != self.links.gen or msg["step"] != job.step:
            raise JobError("bad_run", f"run from step {msg['step']} gen {msg['gen']}: node is at step {job.step} "
                                      f"gen {self.links.gen}")
        try:
            plan = runs.DataPlan(len(job.x), msg["seed"], msg["batch"], msg["shares"], msg.fields.get("accumulate", 1))
        except ValueError as e:
            raise JobError("bad_run", str(e)) from None
        rank, until = self.links.rank, msg["until"]
        if len(plan.shares) != self.links.world or until < job.step:
            raise JobError("bad_run", f"{len(plan.shares)} shares for a ring of {self.links.world}, until {until}")
        micro = plan.micro(rank)
        if missing := sorted(set(micro) - set(job.runners)):
            raise JobError("bad_run", f"no program for micro-batch size(s) {missing}")
        report = Progress(self, ident, job.id, self.links.gen, float(msg.fields.get("report_s", 0.5)))
        end, pending = {"why": "done"}, None
        try:
            if job.dev and self.links.world == 1 and len(micro) == 1 and self.throttle <= 1:
                end = self._run_alone(job, plan, until, report, msg["id"])
            try:
                while job.step < until and end["why"] == "done":
                    if self.job is not job:          # cancelled by the budget watchdog
                        raise JobError("cancelled", f"job {job.id} cancelled at step {job.step}")
                    rows, off, parts = plan.rows_of(job.step, rank), 0, []
                    for m in micro:
                        parts.append((rows[off:off + m], m / plan.batch))
                        off += m
                    at = job.step
                    loss, compute, ar, halt, flight = self._train_step(job, parts, self.halt_run == msg["id"], ahead=True)
                    # the step before is settled only now: its count came back while this one ran
                    digest = job.digest_behind() if self._digest_due(job) else None     # read in _settle
                    new, last, pending = (at, loss, compute, ar, digest, flight), pending, None
                    self._settle(job, last, report, behind=new)
                    pending = new
                    if halt:
                        end = {"why": "halted"}
                        break
            finally:   # a refusal found here wins over a lost peer: the node rewinds to it
                self._settle(job, pending, report)
        except (PeerLost, PlanMismatch) as e:
            log.warning("run stopped at step %d: %s", job.step, e)
            end = {"why": "aborted", "message": str(e)}
            if isinstance(e, PlanMismatch) and e.peer:   # the neighbour that disagreed, for the driver to drop
                end |= {"code": "plan_mismatch", "peer": e.peer}
        finally:
            report.flush()
        return "run_done", {"step": job.step, "snap": job.snap_step(), **end}

    def _run_alone(self, job, plan, until: int, report, run_id) -> dict:
        """A ring of one's run with the host one step ahead of the device: step k+1 is
        enqueued whole (DeviceTrainer.launch_alone, its update gated on the device by the
        NaN/Inf count) before step k's loss is read back, so the host's per-step work (the
        batch's rows, the enqueues, the reports) runs while the device computes, and the
        device does not wait for the host between steps.  A refused step is found one step
        late: the device skipped its update and the next one's; the node goes back to it."""
        dev, runner = job.dev, job.runners[plan.micro(0)[0]]
        flight, last = None, time.perf_counter()
        while True:
            ahead = None
            if job.step < until and self.job is job and self.halt_run != run_id:
                rows = plan.rows_of(job.step, 0)
                ahead = (job.step, len(rows), dev.launch_alone(runner, job.x, job.y, rows))
                job.step += 1
            if flight is None and ahead is None:
                break
            if flight is not None:
                at, n, inflight = flight
                self.compute_since = time.monotonic()
                loss = dev.settle(inflight)
                self.compute_since = None
                if not np.isfinite(loss):
                    self._refuse(job, at, ahead[2] if ahead else None, "the loss or a gradient value is NaN or Inf")
                now = time.perf_counter()
                report.add(at, loss, now - last, 0.0, None)
                self._count_step(n, now - last, now - last, 0.0, 0, 0)
                last = now
            flight = ahead
        if self.job is not job:              # cancelled by the budget watchdog
            raise JobError("cancelled", f"job {job.id} cancelled at step {job.step}")
        return {"why": "halted" if job.step < until else "done"}

    def _settle(self, job, held, report, behind=None) -> None:
        """Report a step of a run whose sum's NaN/Inf count was still on its way back
        (`held`: step, loss, compute s, all-reduce s, the digest's reader or None, the
        flight; None: nothing),
        or refuse it: its update was skipped on the device, and so was that of the step
        enqueued after it (`behind`, settled here, never reported); the node goes back to
        it.  Every rank holds the same sum, so every rank refuses the same step."""
        if held is None:
            return
        at, loss, compute, ar, digest, flight = held
        if flight is not None and np.isnan(job.dev.settle(flight)):
            self._refuse(job, at, behind[-1] if behind else None, "the gradient sum holds NaN or Inf values")
        report.add(at, loss, compute, ar, digest() if digest else None)

    @staticmethod
    def _refuse(job, at: int, behind, why: str) -> None:
        """Refuse step `at`, found a step late: the flight of the step launched behind it
        (`behind`, if any; its update was skipped on the device too) is settled so its
        read-back is released, the device goes back to step `at`, and the node with it."""
        if behind is not None:
            job.dev.settle(behind)
        job.dev.rewind(at)
        job.step = at
        raise JobError("nonfinite", f"step {at}: {why}; not applied, weights stay at this step")

    def _count_step(self, samples: int, step_s: float, compute: float, ar: float, sent: int, nbytes: int) -> None:
        m, world = self.metrics, self.links.world
        m.steps.inc()
        m.step_seconds.set(step_s)
        m.compute_seconds.set(compute)
        m.samples_per_second.set(samples / compute if compute else 0)
        m.allreduce_bytes.inc(sent)
        m.allreduce_bandwidth.set(2 * (world - 1) / world * nbytes / ar if world > 1 and ar else 0)

    def _train_step(self, job, parts, vote_halt: bool, snapshot_alone: bool = False, ahead: bool = False):
        """One step: forward + backward of each (rows, weight) micro-batch, gradients summed
        (weights: rows / global batch), all-reduced with the ring, checked, applied.
        Returns (global loss, compute s, all-reduce s, whether the ring voted to halt, a
        flight or None).  A streamed step's update is enqueued by streamed_step, gated on
        the device's count of NaN/Inf in the sum.  With `ahead`, that count's flight
        (DeviceTrainer.settle) is returned unread: the host goes on to the next step while
        the device finishes this one (_settle reads it a step later); otherwise the count
        is waited for here.
        Rollback snapshots are taken in rings of two or more (a ring of one has nobody to
        wait for), unless `snapshot_alone` (steps dealt by hand)."""
        t0, sent0 = time.perf_counter(), self.links.bytes_sent
        self.compute_since = time.monotonic()
        world, stream, streamed, flat, flight = self.links.world, None, None, None, None
        runner = job.runners[len(parts[0][0])]
        try:
            if world > 1:    # decided once per ring generation, by all ranks together
                sizes = job.sizes
                stream = shmstream.stream_for(self.links, job.step, self._overlap_bytes(job), sum(sizes) + 2, sizes,
                                              job.dev.gradient_order(runner) if job.dev else None,
                                              on_device=job.dev is not None, narrow=job.transport == "bfloat16")
            if job.dev and world == 1 and len(parts) == 1:     # a ring of one: gradients stay on the device
                idx = parts[0][0]
                loss = job.dev.local_step(runner, job.x[idx], job.y[idx])
            elif job.dev and stream and stream.on_device and len(parts) == 1:   # summed while backward runs
                idx, w = parts[0]
                streamed = job.dev.streamed_step(runner, job.x, job.y, w, 1.0 if vote_halt else 0.0,
                                                 stream, job.step, rows=idx,
                                                 snapshot=job.step if self._snapshot_due(job, world) else None)
                if len(job.dev.phases) == job.dev.phases.maxlen:
                    log.info("streamed steps: %s", job.dev.phase_report())
                    job.dev.phases.clear()
            else:
                flat = self._gradients(job, parts)
            waited = streamed[4] if streamed else 0.0       # for the other ranks: all-reduce, not compute
            compute = time.perf_counter() - t0 - waited
            if self.throttle > 1 and job.step >= self.throttle_from:   # simulate a slower device (load-balancing tests)
                time.sleep(compute * (self.throttle - 1))
                compute *= self.throttle
        finally:
            self.compute_since = None
        t1 = time.perf_counter()
        if flat is not None:
            flat[-1] = 1.0 if vote_halt else 0.0       # summed: every rank sees the same vote
            if stream:
                stream.allreduce(flat, job.step)
            else:   # the loss and the vote (the last two) are summed in float32 whatever the transport
                allreduce(self.links, flat, job.step, transport=job.transport, exact_tail=2)
            if job.dev:       # uploaded now, checked on the device below
                job.dev.upload(flat)
            t2 = time.perf_counter()
            loss, halt = float(flat[-2]), bool(flat[-1] > 0)
            if job.dev:
                finite = job.dev.grads_finite() and bool(np.isfinite(flat[-2:]).all())
            else:
                finite = hostpool.all_finite(flat)
        elif streamed:
            t2 = t1
            _, loss, vote, flight, _ = streamed
            halt, finite = vote > 0, bool(np.isfinite(loss))
            if not (ahead and finite):        # the device's count, waited for now
                finite = finite and not np.isnan(job.dev.settle(flight))
                if not finite:   # the update queued by streamed_step was skipped: clear the count
                    job.dev.rewind(job.step)
                flight = None
        else:
            t2 = time.perf_counter()
            halt, finite = vote_halt, np.isfinite(loss)
        ar = t2 - t1 + waited
        # Every rank holds the same sum, so every rank refuses together (before any update).
        if not finite:
            bad = int(np.count_nonzero(~np.isfinite(flat[:-2]))) if flat is not None else "some"
            raise JobError("nonfinite", f"step {job.step}: {bad} gradient value(s) (or the loss) are NaN or Inf "
                                        "after the all-reduce; not applied, weights stay at this step")
        if streamed:       # its snapshot and update are on the device's queue already
            pass
        elif job.dev:      # snapshot on the device (rollback), then the fused update
            if self._snapshot_due(job, world, snapshot_alone):
                job.dev.snapshot(job.step)
            if flat is None:        # the program's own gradients (a ring of one)
                job.dev.apply(runner)
            else:                   # the reduced gradients are uploaded already
                job.dev.apply()
        else:
            job.prev = (hostpool.copy(job.params), hostpool.copy(job.opt.state), job.opt.t)
            job.opt.update(job.params, unpack(flat[:-2], job.shapes))
        job.step += 1
        nbytes = flat.nbytes if flat is not None else 4 * sum(job.sizes) if streamed else 0
        self._count_step(sum(len(p[0]) for p in parts), time.perf_counter() - t0, compute, ar,
                         self.links.bytes_sent - sent0, nbytes)
        return loss, compute, ar, halt, flight

    def _snapshot_due(self, job, world: int, alone: bool = False) -> bool:
        """Whether this step's update is preceded by a rollback snapshot on the device:
        every --snapshot-every steps, in rings of two or more (or `alone`)."""
        return bool(self.snapshot_every) and (world > 1 or alone) and job.step % self.snapshot_every == 0

    def _overlap_bytes(self, job) -> int:
        """The streamed all-reduce's largest piece: --overlap-mb, or by device kind (auto):
        on two H200s it made a step 2.2-2.7x faster (bench/NOTES.md); on CPU nodes it is
        not measured yet, and their copies would compete with PoCL's threads.  A bfloat16
        job streams only between devices (stream_for's `narrow`); a float16 job keeps its
        ring."""
        if job.transport not in ("float32", "bfloat16") or (job.transport == "bfloat16" and job.dev is None):
            return 0
        if self.overlap_bytes >= 0:
            return self.overlap_bytes
        return AUTO_OVERLAP_BYTES if job.dev is not None and job.dev.is_gpu else 0

    def _gradients(self, job, parts) -> np.ndarray:
        """[weighted gradient sum..., weighted loss, halt vote] on the host, for the all-reduce."""
        n = sum(job.sizes)
        new = job.dev.host_array if job.dev else lambda k: np.empty(k, np.float32)
        if job.flat is None or len(job.flat) != n + 2:
            job.flat = new(n + 2)
        flat = job.flat
        for k, (idx, w) in enumerate(parts):
            if k == 1 and (job.scratch is None or len(job.scratch) != n + 1):
                job.scratch = new(n + 1)
            out = flat[:-1] if k == 0 else job.scratch     # micro-batches after the first: added on the host
            runner = job.runners[len(idx)]
            if job.dev:    # gradients and loss weighted on the device, downloaded straight into the packed buffer
                job.dev.forward_backward(runner, job.x[idx], job.y[idx], out, weight=w)
            else:
                loss, grads = runner.run(job.params, job.x[idx], job.y[idx])
                out[:] = pack([*grads, np.float32([loss])])
                out *= np.float32(w)
            if k:
                flat[:-1] += out
        return flat

    def _on_state(self, ident, msg):
        job = self._need_job(msg)
        state = job.opt_state()
        return "state_data", {"step": job.step, "names": job.names, "n_state": len(state)}, \
            [a.copy() for a in (*job.weights(), *state)]   # sent zero-copy; the next step mutates in place

    def _on_stop(self, ident, msg):
        self.job = None
        return "ok", {}


class Progress:
    """A run's per-step losses and timings, sent to the driver every `every_s` seconds
    (and when the run ends) as one `progress` message: the driver hears about steps
    without a message per step on the nodes' critical path."""

    def __init__(self, node, ident, job: str, gen: int, every_s: float):
        self.node, self.ident, self.job, self.gen, self.every_s = node, ident, job, gen, max(0.0, every_s)
        self.first, self.rows, self.digests = None, [], []
        self.last = time.monotonic()

    def add(self, step: int, loss: float, compute: float, ar: float, digest: str | None) -> None:
        if self.first is None:
            self.first = step
        self.rows.append((loss, compute, ar, time.time()))
        if digest is not None:
            self.digests.append([step + 1, digest])
        if time.monotonic() - self.last >= self.every_s or len(self.rows) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            loss, compute, ar, t = (list(c) for c in zip(*self.rows))
            self.node._reply(self.ident, None, "progress", {
                "job": self.job, "gen": self.gen, "first": self.first, "loss": loss, "compute": compute,
                "allreduce": ar, "t": t} | ({"digests": self.digests} if self.digests else {}))
        self.first, self.rows, self.digests = None, [], []
        self.last = time.monotonic()
