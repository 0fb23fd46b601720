"""A node's weights and optimizer state on its OpenCL device, for engine programs.

The single-process engine trains with the weights, gradients and optimizer state on the
device and the update as one fused kernel (engine.optim).  A node does the same; only the
gradients leave the device (downloaded into the packed all-reduce buffer) and the reduced
gradients come back (uploaded into fixed gradient buffers).  Per step:

    upload x, y -> replay the step program (forward + backward) -> weight the gradients
    (b_i / B, on the device) -> download them -> ring all-reduce (host) -> upload the
    reduced gradients -> NaN/Inf check (device, one float read back) -> device snapshot
    for rollback -> replay the optimizer's captured fused update

How the pieces share memory: an engine optimizer writes each parameter in place
(engine/storage.py ``commit``): the parameter's storage keeps its device Buffer *handle*
across writes (the memory behind it is swapped).  Every StepRunner's parameter slots are
bound to those same handles before its launch list is captured, so the compiled forward
and backward read the current weights with no copy, whichever batch size's program runs.
The optimizer step is captured once (engine.launch.capture) and replayed; its host action
advances the step counter and Adam's bias corrections, exactly as engine.compile does.

A ring of one needs no all-reduce, so its gradients never leave the device
(``local_step``): the fused update is captured once more per step program, reading that
program's gradient outputs directly, and one float comes back per step: the loss plus
zero times the sum of every gradient, which is the loss itself when everything is finite
and NaN otherwise (the node's refusal to apply non-finite gradients, without downloading
them).

Reference (numpy) programs never come here: they keep cluster.optimizer.HostOptimizer.
"""
from __future__ import annotations

import numpy as np

try:
    import pyopencl as cl
    from engine import launch, optim, realize as rz
    import kernels
    from engine.codegen import KernelSpec
    from engine.runtime import NP_DTYPES
    from engine.tensor import Tensor, tensor
except Exception:   # a node without the engine runs reference programs only
    cl = None

# HostOptimizer's state order (cluster/optimizer.py) <-> engine.optim's state names
_SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}


def make_optimizer(spec: dict, params):
    """engine.optim optimizer from a driver's spec (cluster.optimizer.check_spec'd)."""
    if spec["name"] == "sgd":
        return optim.SGD(params, lr=spec["lr"], momentum=spec.get("momentum", 0.0),
                         weight_decay=spec.get("weight_decay", 0.0), nesterov=bool(spec.get("nesterov", False)))
    return optim.Adam(params, lr=spec["lr"], betas=tuple(spec.get("betas", (0.9, 0.999))),
                      eps=spec.get("eps", 1e-8), weight_decay=spec.get("weight_decay", 0.0))


def _slots(spec: dict) -> tuple:
    if spec["name"] == "sgd":
        return _SLOTS["sgd"] if spec.get("momentum", 0) else ()
    return _SLOTS["adam"]


def _plus_nan_of(start, tensors):
    """start + the sum of t * 0 over `tensors`: `start` when every value is finite, NaN when
    one is NaN or Inf (NaN * 0 and Inf * 0 are NaN; finite * 0 is 0)."""
    for t in tensors:
        start = start + (t * 0.0).sum()
    return start


class DeviceTrainer:
    """Weights, gradients and optimizer state of one job on one device."""

    def __init__(self, device, spec: dict, params: list, state: list, t: int):
        self.device, self.spec, self.t = device, spec, int(t)
        self.shapes = [tuple(p.shape) for p in params]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = [int(o) for o in np.concatenate([[0], np.cumsum(self.sizes)])]   # of each in the packed buffer
        self.w = [tensor(np.ascontiguousarray(p, np.float32), device=device) for p in params]
        for p in self.w:
            p.realize()
        self.g = [tensor(np.zeros(s, np.float32), device=device) for s in self.shapes]
        for p, g in zip(self.w, self.g):
            g.realize()
            p.grad = g
        self.opt = make_optimizer(spec, self.w)
        self.names = _slots(spec)
        n = len(params)
        for j, name in enumerate(self.names):
            for i in range(n):
                buf = self.opt._buffer(i, name)
                if state:
                    device.upload(np.ascontiguousarray(state[j * n + i], np.float32), dest=rz.buffer_of(buf._storage.node))
        self.opt.step_count = self.t
        # the handles stay the storages' own across in-place writes (storage.commit)
        self.wbufs = [rz.buffer_of(p._storage.node) for p in self.w]
        self.gbufs = [rz.buffer_of(g._storage.node) for g in self.g]
        self.sbufs = [rz.buffer_of(self.opt.state[i][name]._storage.node) for name in self.names for i in range(n)]
        self.updates = {}        # None (the gradient buffers) or id(runner) (its outputs) -> captured update
        self.snap = None         # (step, [device copies of weights + state]) for rollback
        self.checks = {}         # id(runner) or "grads" -> (captured launches, buffer, kept alive) of a finite check
        self.scaled = {}         # id(runner) -> (weight Var, captured launches, buffers, runner) of weighted gradients
        self.pinned = []         # host_array's buffers
        self.ready = {}          # (id(runner), bucket bytes) -> overlapped all-reduce buckets (see buckets)
        self.checked = np.empty(1, np.float32)
        self.summer = self._checksum_kernel()    # (kernel, partial sums on the device, their host array, groups)

    def host_array(self, n: int) -> np.ndarray:
        """float32[n] in host memory the OpenCL driver may page-lock (an ALLOC_HOST_PTR
        buffer, kept mapped): the packed gradients' downloads and uploads go to and from
        it, which NVIDIA's driver can DMA directly instead of staging through pageable
        memory (not measured yet: bench/NOTES.md); on PoCL it is plain host memory."""
        buf = cl.Buffer(self.device.context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR, max(4, 4 * n))
        arr, _ = cl.enqueue_map_buffer(self.device.queue, buf, cl.map_flags.READ | cl.map_flags.WRITE, 0, (n,),
                                       np.float32, is_blocking=True)
        self.pinned.append(buf)          # the mapping lives as long as the trainer
        return arr

    # --- the step program ---------------------------------------------------------------
    def bind(self, runner) -> None:
        """Point a StepRunner's parameter slots at this job's weight handles (before its
        launch list is captured), so its forward/backward reads the live weights."""
        for i, h in enumerate(self.wbufs):
            slot = runner.slots[f"param:{i}"]
            if slot.shape != self.shapes[i]:
                raise ValueError(f"param:{i}: program shape {slot.shape}, job {self.shapes[i]}")
            rz.bind_buffer(slot.node, h)

    def _run_program(self, runner, x, y) -> list:
        """Upload the batch and replay forward + backward; the output buffers (loss, grads)."""
        for name, arr in (("x", x), ("y", y)):
            slot = runner.slots[name]
            self.device.upload(np.ascontiguousarray(arr, dtype=NP_DTYPES[slot.dtype]), dest=rz.buffer_of(slot.node))
        step = runner.step
        if step.items is None:
            step()                       # first run: captures the launch list
        else:
            launch.replay(step.items, self.device)
        return [rz.buffer_of(t.node) for t in step.outs]

    def forward_backward(self, runner, x, y, flat: np.ndarray, weight: float = 1.0) -> float:
        """Run the step program; the gradients times `weight` land in flat[:-1] (packed in
        parameter order), the loss times `weight` in flat[-1].  Returns the unweighted loss.
        The gradients are weighted on the device, before they come down: on the host that
        multiply was one more pass over every gradient (8 ms for 20 M floats on one core)."""
        outs = self._run_program(runner, x, y)
        if weight != 1.0:
            outs = [outs[0], *self._weighted(runner, weight)]
        q, off = self.device.queue, 0
        for buf, n in zip(outs[1:], self.sizes):
            if n:
                cl.enqueue_copy(q, flat[off:off + n], buf.mem, is_blocking=False)
            off += n
        loss = np.empty(1, np.float32)
        cl.enqueue_copy(q, loss, outs[0].mem, is_blocking=True)   # in-order queue: all copies done
        flat[-1] = loss[0] * np.float32(weight)
        return float(loss[0])

    def _weighted(self, runner, weight: float) -> list:
        """The buffers of `weight` x each gradient output of `runner`'s program, computed on
        the device (captured once per program, the weight a host scalar of each replay)."""
        if id(runner) not in self.scaled:
            w = rz.Var(1.0)
            wt = Tensor(w.node, self.device)
            with launch.capture() as cap:
                scaled = [g * wt for g in runner.step.outs[1:]]
                for t in scaled:
                    t.realize()
            self.scaled[id(runner)] = (w, cap.items, [rz.buffer_of(t.node) for t in scaled], runner)
        w, items, bufs, _ = self.scaled[id(runner)]
        w.value = float(weight)
        launch.replay(items, self.device)
        return bufs

    def local_step(self, runner, x, y) -> float:
        """A ring of one: forward + backward, the gradients left in the program's outputs;
        returns the loss, or NaN when the loss or any gradient is not finite (then nothing
        may be applied).  apply(runner) updates from those outputs."""
        self._run_program(runner, x, y)
        outs = runner.step.outs
        return self._finite_check(id(runner), lambda: _plus_nan_of(outs[0].reshape(()), outs[1:]), keep=runner)

    def _finite_check(self, key, build, keep=None) -> float:
        """The one float of build() (see _plus_nan_of), built and captured under `key` the
        first time (with `keep`, whose id the key may be, held alive), replayed after."""
        if key not in self.checks:
            with launch.capture() as cap:
                out = build()
                out.realize()
            self.checks[key] = (cap.items, rz.buffer_of(out.node), keep)
        else:
            launch.replay(self.checks[key][0], self.device)
        cl.enqueue_copy(self.device.queue, self.checked, self.checks[key][1].mem, is_blocking=True)
        return float(self.checked[0])

    def buckets(self, runner, target_bytes: int) -> list[tuple[int, int, int]]:
        """Gradients grouped for an overlapped all-reduce: (first param, end param, launch
        index after which all of them are final), in the order the step's launch list
        makes them final; a bucket grows over parameters that become final next and sit
        beside it in the packed buffer (one contiguous all-reduce) up to `target_bytes`."""
        key = (id(runner), target_bytes)
        if key not in self.ready:
            outs = [rz.buffer_of(t.node) for t in runner.step.outs[1:]]
            last = [-1] * len(outs)
            for k, it in enumerate(runner.step.items):
                if isinstance(it, launch.Launch):
                    for a in it.args:
                        for i, b in enumerate(outs):
                            if a is b:
                                last[i] = k       # the last launch that touches an output produces it
            groups, lo, hi, size = [], None, None, 0
            for i in sorted(range(len(outs)), key=lambda i: (last[i], i)):   # in the order they become final
                if lo is not None and size < target_bytes and i in (hi, lo - 1):
                    lo, hi, size = min(lo, i), max(hi, i + 1), size + 4 * self.sizes[i]
                    continue
                if lo is not None:
                    groups.append((lo, hi, max(last[lo:hi])))
                lo, hi, size = i, i + 1, 4 * self.sizes[i]
            if lo is not None:
                groups.append((lo, hi, max(last[lo:hi])))
            self.ready[key] = sorted(groups, key=lambda g: g[2])
        return self.ready[key]

    def forward_backward_overlapped(self, runner, x, y, flat: np.ndarray, reduce, target_bytes: int) -> float:
        """forward_backward whose gradients are handed over bucket by bucket while the
        device still runs the rest of backward: the launch list is replayed in segments,
        each bucket's download enqueued (non-blocking) right after the launch that
        completes it, then `reduce(lo, hi)` is called on flat[lo:hi] as each download
        lands, and the reduced bucket is uploaded (non-blocking) into the gradient
        buffers.  The loss lands in flat[-1] (not reduced here).  Call apply() after."""
        for name, arr in (("x", x), ("y", y)):
            slot = runner.slots[name]
            self.device.upload(np.ascontiguousarray(arr, dtype=NP_DTYPES[slot.dtype]), dest=rz.buffer_of(slot.node))
        items, q = runner.step.items, self.device.queue
        outs = [rz.buffer_of(t.node) for t in runner.step.outs]
        offs = self.offsets
        pending, at = [], 0
        for first, end, ready in self.buckets(runner, target_bytes):
            if ready + 1 > at:
                launch.replay(items[at:ready + 1], self.device)
                at = ready + 1
            evs = [cl.enqueue_copy(q, flat[offs[i]:offs[i + 1]], outs[1 + i].mem, is_blocking=False)
                   for i in range(first, end) if self.sizes[i]]
            q.flush()                      # the device starts now; the host waits per bucket below
            pending.append((first, end, evs))
        launch.replay(items[at:], self.device)
        q.flush()
        for first, end, evs in pending:
            cl.wait_for_events(evs) if evs else None
            reduce(offs[first], offs[end])
            for i in range(first, end):
                if self.sizes[i]:
                    cl.enqueue_copy(q, self.gbufs[i].mem, flat[offs[i]:offs[i + 1]], is_blocking=False)
            q.flush()
        loss = np.empty(1, np.float32)
        cl.enqueue_copy(q, loss, outs[0].mem, is_blocking=True)   # in-order queue: the uploads are done too
        flat[-1] = loss[0]
        return float(loss[0])

    # --- the update -----------------------------------------------------------------------
    def update(self, flat: np.ndarray) -> None:
        """Upload the reduced gradients (flat[:-1]) and apply the fused optimizer step."""
        self.upload(flat)
        self.device.queue.finish()
        self.apply()

    def upload(self, flat: np.ndarray) -> None:
        """The reduced gradients (flat[:len]) into the gradient buffers, not waited for:
        `flat` must stay as it is until the queue has run them (grads_finite waits)."""
        q, off = self.device.queue, 0
        for buf, n in zip(self.gbufs, self.sizes):
            if n:
                cl.enqueue_copy(q, buf.mem, flat[off:off + n], is_blocking=False)
            off += n

    def grads_finite(self) -> bool:
        """Whether every value in the gradient buffers is finite, decided on the device (the
        sum of g * 0 over all of them is 0, or NaN when one is NaN or Inf) with one float
        read back: the host scan of 20 M floats it replaces took ~4.5 ms on 4 threads."""
        return bool(np.isfinite(self._finite_check("grads", lambda: _plus_nan_of((self.g[0] * 0.0).sum(), self.g[1:]))))

    def apply(self, runner=None) -> None:
        """The fused optimizer step on the gradient buffers, or on `runner`'s gradient
        outputs (a ring of one: no copy).  Each is captured once, then replayed."""
        key = None if runner is None else id(runner)
        if key not in self.updates:
            grads = self.g if runner is None else runner.step.outs[1:]
            for p, g in zip(self.w, grads):
                p.grad = g
            try:
                with launch.capture() as cap:
                    self.opt.step()
            finally:
                for p, g in zip(self.w, self.g):
                    p.grad = g
            self.updates[key] = (cap.items, runner)    # the runner stays alive with its capture
        else:
            launch.replay(self.updates[key][0], self.device)
        self.t += 1

    # --- rollback snapshot on the device ------------------------------------------------------
    def snapshot(self, step: int) -> None:
        """Device-side copy of weights and optimizer state (no host traffic)."""
        bufs = self.wbufs + self.sbufs
        if self.snap is None:
            self.snap = (step, [self.device.alloc(b.nbytes) for b in bufs])
        copies = self.snap[1]
        for src, dst in zip(bufs, copies):
            self.device.copy(src, dst, src.nbytes)
        self.snap = (step, copies)

    def restore(self) -> int:
        step, copies = self.snap
        for src, dst in zip(copies, self.wbufs + self.sbufs):
            self.device.copy(src, dst, src.nbytes)
        self.device.synchronize()
        self.t = self.opt.step_count = step
        return step

    # --- downloads on request -------------------------------------------------------------------
    def weights(self) -> list[np.ndarray]:
        return [self.device.download(b, s, "float32") for b, s in zip(self.wbufs, self.shapes)]

    def _checksum_kernel(self) -> tuple:
        """checksum's kernel, built when the trainer is made (not at the first digest, in
        the middle of the steps), and the buffers of its partial sums."""
        groups = max(16, min(1024, 4 * int(self.device.cl_device.max_compute_units)))
        params = {"name": "mao_weights_checksum", "wg": 64}
        spec = KernelSpec(params["name"], "checksum", params, kernels.render("checksum", **params),
                          global_size=(groups * params["wg"],), local_size=(params["wg"],))
        partial = self.device.alloc(8 * groups * len(self.wbufs))
        return self.device.build(spec), partial, np.empty(groups * len(self.wbufs), np.uint64), groups

    def checksum(self) -> str:
        """The weights' checksum (hostpool.weights_checksum's value) computed on the device
        (kernels/checksum.cl.mako): a few thousand 64-bit partial sums come back instead of
        the weights (the big MLP's 80 MB cost 33 ms to download and CRC-32 on the host). For
        the digest every K steps."""
        ck, partial, host, groups = self.summer
        local = ck.spec.params["wg"]
        for k, (buf, a, b) in enumerate(zip(self.wbufs, self.offsets, self.offsets[1:])):
            self.device.launch(ck, (groups * local,), (local,),
                               [buf.mem, np.uint32(b - a), np.uint64(a), partial.mem, np.uint32(k * groups)])
        cl.enqueue_copy(self.device.queue, host, partial.mem, is_blocking=True)
        return f"{int(host.sum(dtype=np.uint64)):016x}"

    def state(self) -> list[np.ndarray]:
        n = len(self.shapes)
        return [self.device.download(b, self.shapes[k % n], "float32") for k, b in enumerate(self.sbufs)]
