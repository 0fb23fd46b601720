"""The node's worker thread: job requests (job, program, ring, step, state, stop) run
in order, one at a time, each answered through the main thread (NodeDaemon._reply).
JobHandlers is a mixin of NodeDaemon (cluster/daemon.py) and uses its attributes: the
job, the ring links, the metrics, the budgets and the lock it shares with the watchdog."""
from __future__ import annotations

import logging
import time

import numpy as np

from . import hostpool, program
from .allreduce import PlanMismatch, allreduce, pack, unpack
from .job import Job, JobError
from .optimizer import OptimizerError
from .ring import PeerLost

log = logging.getLogger("engine-node")


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
