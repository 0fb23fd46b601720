"""A node's weights and optimizer state on its OpenCL device, for engine programs.

The single-process engine trains with the weights, gradients and optimizer state on the
device and the update as one fused kernel (engine.optim).  A node does the same; only the
gradients leave the device (downloaded into the packed all-reduce buffer) and the reduced
gradients come back (uploaded into fixed gradient buffers).  Per step:

    upload x, y -> replay the step program (forward + backward) -> weight the gradients
    (b_i / B, on the device) -> download them -> ring all-reduce (host) -> upload the
    reduced gradients -> NaN/Inf check (device, one float read back) -> device snapshot
    for rollback -> replay the optimizer's captured fused update

On a ring whose ranks share a host (cluster/shmstream.py) the downloads into shared memory,
the uploads of the other ranks' pieces and the sum run piece by piece while backward still
runs (``streamed_step``): two more command queues carry the copies beside the kernels, and
the weighted sum is computed on the device; the host copies nothing.

How the pieces share memory: an engine optimizer writes each parameter in place
(engine/storage.py ``commit``): the parameter's storage keeps its device Buffer *handle*
across writes (the memory behind it is swapped).  Every StepRunner's parameter slots are
bound to those same handles before its launch list is captured, so the compiled forward
and backward read the current weights with no copy, whichever batch size's program runs.
The optimizer step is captured once (engine.launch.capture) and replayed; its host action
advances the step counter and Adam's bias corrections, exactly as engine.compile does.

A ring of one needs no all-reduce, so its gradients never leave the device
(``local_step``): the fused update is captured once more per step program, reading that
program's gradient outputs directly, and per step the loss and a count of NaN/Inf values
over every gradient come back (count_nonfinite: one launch, a few KB of partial counts):
the node's refusal to apply non-finite gradients, without downloading them.

Reference (numpy) programs never come here: they keep cluster.optimizer.HostOptimizer.
"""
from __future__ import annotations

import collections
import logging
import os
import time

import numpy as np

from . import localsum

try:
    import pyopencl as cl
    from engine import codegen, launch, optim, realize as rz
    import kernels
    from engine.codegen import KernelSpec
    from engine.device import start_timing
    from engine.runtime import NP_DTYPES
    from engine.tensor import Tensor, tensor
except Exception:   # a node without the engine runs reference programs only
    cl = None

log = logging.getLogger(__name__)

# launches a streamed step enqueues between flushes of its queue (_replay_flushed)
FLUSH_EVERY = 6
# what a timed streamed step reports (ENGINE_NODE_TIMELINE=1: phase_report)
TIMELINE = ("first piece computed", "down", "up", "last piece computed", "down", "up", "sums counted", "updated")
# launches a streamed step's tail enqueues between looks at the exchange (_tail)
TAIL_CHUNK = 2
# parameters (or spans of a piece) one launch of kernels/grad_sum.cl.mako (or gather) takes:
# few enough that the argument list stays small on every device
MANY_PER_LAUNCH = 8
# the longest sleep between polls of a streamed step's exchange (s); polling without
# sleeping was no faster on two H200s (bench/NOTES.md)
POLL_LONGEST_S = 2e-4
# streamed steps whose phases phase_report averages
PHASE_STEPS = 50
STREAM_PHASES = ("enqueue", "first piece down", "pieces exchanged", "loss exchanged", "sum enqueued")

# a job's rows are kept in a GPU's memory when they take at most this share of it (and fit
# one allocation): a batch is then gathered there from its row indices (_upload_batch).
# ENGINE_NODE_DATA_ON_DEVICE: auto (the default), 1 (always, also on a CPU device) or 0
DATA_SHARE = 0.25
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
        self.scaled = {}         # id(runner) -> (weight Var, captured launches, buffers, runner) of weighted gradients
        self.pinned = []         # host_array's buffers
        self.staged = []         # the last batch's uploads (_upload_batch)
        # page-locked arrays of _upload_batch: (id(runner), input, turn) -> a batch's rows;
        # ("rows", count, turn) -> its row indices, where the rows are kept on the device
        self.batches = {}
        self.kept = None         # (the job's x, {input: its rows in device memory} or {}: _rows_kept)
        self.rows_buf = None     # the batch's row indices on the device (_rows_kept)
        self.turn = 0
        self.results = {}        # turn -> host-visible buffer of launch_alone's (loss, NaN/Inf count)
        self.ready = {}          # id(runner) -> (_last_writes, runner kept alive)
        # downloads and uploads of a streamed step, beside the kernels of the step queue and
        # beside each other (a GPU's copy engines move both directions at once)
        # ENGINE_NODE_TIMELINE=1: streamed steps also time their events on the device
        # (profiling on the copy queues and, through engine.device.timing, on the step
        # queue: for the rest of this process), see _timeline
        self.timed = os.environ.get("ENGINE_NODE_TIMELINE", "") not in ("", "0")
        if self.timed:
            start_timing()
        props = cl.command_queue_properties.PROFILING_ENABLE if self.timed else 0
        self.copies = cl.CommandQueue(device.context, device.cl_device, properties=props)
        self.uploads = cl.CommandQueue(device.context, device.cl_device, properties=props)
        self.streaming = None    # _StreamState of the stream streamed_step last ran with
        self.phases = collections.deque(maxlen=PHASE_STEPS)   # streamed_step's phases (phase_report)
        self.timeline = collections.deque(maxlen=PHASE_STEPS)  # device times of streamed steps (timed)
        self.last_events = None  # the last streamed step's events, read at the next one
        self.tail_end = None     # a marker behind the last streamed step's update (timeline only)
        self.summer = self._partials_kernel("checksum", np.uint64, slots=len(self.wbufs))
        self.finder = self._partials_kernel("nonfinite", np.uint32, count=len(self.sizes) + 1)   # + the loss
        # NaN/Inf values counted since the host last cleared it: every captured update is
        # gated on it (engine.optim's found_inf), so a step enqueued before the host has read
        # the count of the one before (launch_alone) cannot apply after a refused one
        self.found = tensor(np.zeros(1, np.int32), device=device)
        self.found.realize()
        self.opt.found_inf = self.found
        self.foundbuf = rz.buffer_of(self.found._storage.node)   # nobody commits to it: a fixed handle
        self.kernels = {}            # (template, params) -> this module's kernels built so far (kernel())
        self.checksum_buf = None     # checksum_behind's host-visible partial sums
        self.checksum_read = None    # the reader of a checksum_behind not read yet
        self.sums_read = None        # a marker behind the last streamed step's sums
        self.upload_after = None     # the step before's sums_read, which this step's uploads wait for

    @property
    def is_gpu(self) -> bool:
        return bool(self.device.cl_device.type & cl.device_type.GPU)

    def host_array(self, n: int, dtype=np.float32) -> np.ndarray:
        """dtype[n] in host memory the OpenCL driver may page-lock (an ALLOC_HOST_PTR
        buffer, kept mapped): the packed gradients' downloads and uploads go to and from
        it, and a lone node's batches come from it, which NVIDIA's driver can DMA directly
        instead of staging through pageable memory; on PoCL it is plain host memory."""
        buf = self.host_visible(np.dtype(dtype).itemsize * n)
        arr, _ = cl.enqueue_map_buffer(self.device.queue, buf, cl.map_flags.READ | cl.map_flags.WRITE, 0, (n,),
                                       dtype, is_blocking=True)
        self.pinned.append(buf)          # the mapping lives as long as the trainer
        return arr

    def host_visible(self, nbytes: int):
        """A device buffer the driver keeps in host memory it may page-lock (ALLOC_HOST_PTR)."""
        return cl.Buffer(self.device.context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR, max(8, nbytes))

    @staticmethod
    def read_behind(queue, res, srcs, wait_for=None) -> tuple:
        """The first float32/int32 of each of `srcs` (device buffers), copied side by side on
        the device into `res` (host_visible) behind what `queue` holds, then mapped without
        waiting: (the mapped array, the map's event); its .base.release(queue) after
        reading.  NVIDIA's driver returns from a read into host memory (even page-locked)
        only once the read has run, which held a host that runs ahead of its device at
        every read (bench/NOTES.md)."""
        for k, src in enumerate(srcs):
            cl.enqueue_copy(queue, res, src, byte_count=4, dst_offset=4 * k, wait_for=None if k else wait_for)
        return cl.enqueue_map_buffer(queue, res, cl.map_flags.READ, 0, (len(srcs),), np.float32, is_blocking=False)

    # --- the step program ---------------------------------------------------------------
    def bind(self, runner) -> None:
        """Point a StepRunner's parameter slots at this job's weight handles (before its
        launch list is captured), so its forward/backward reads the live weights."""
        for i, h in enumerate(self.wbufs):
            slot = runner.slots[f"param:{i}"]
            if slot.shape != self.shapes[i]:
                raise ValueError(f"param:{i}: program shape {slot.shape}, job {self.shapes[i]}")
            rz.bind_buffer(slot.node, h)

    def _upload_batch(self, runner, x, y, rows=None) -> None:
        """x and y (or their `rows`) into the program's input slots, not waited for: a
        blocking copy would wait for the previous step's update and idle the device while
        the host enqueues this step.  The arrays (fresh row gathers) are held until the
        next batch, by which time a read-back has long waited for them.  With `rows`, the
        rows are gathered straight into page-locked arrays (two per slot, used in turn:
        the batch before may still be on its way): NVIDIA's driver copies pageable memory
        only when the queue reaches the copy, which held a host running a step ahead
        (launch_alone) until the device had finished the step before.  Where the job's
        rows are kept on the device (_rows_kept), only the rows' indices go up, and the
        batch is gathered there."""
        q, staged = self.device.queue, []
        self.turn ^= 1
        kept = self._rows_kept(runner, x, y) if rows is not None and len(rows) else None
        if kept:      # only the indices go up; the rows are gathered on the device
            idx = self.batches.get(("rows", len(rows), self.turn))
            if idx is None:
                idx = self.batches["rows", len(rows), self.turn] = self.host_array(len(rows), np.int32)
            idx[:] = rows
            if self.rows_buf is None or self.rows_buf.nbytes < idx.nbytes:
                self.rows_buf = self.device.alloc(idx.nbytes)
            staged.append(cl.enqueue_copy(q, self.rows_buf.mem, idx, is_blocking=False))
        for name, src in (("x", x), ("y", y)):
            slot = runner.slots[name]
            dt = NP_DTYPES[slot.dtype]
            if kept:
                self._take_rows(kept[name], len(rows), src, slot.dtype, rz.buffer_of(slot.node))
                continue
            if rows is None:
                arr = np.ascontiguousarray(src, dtype=dt)
            else:
                shape = (len(rows), *src.shape[1:])
                key = (id(runner), name, self.turn)
                arr = self.batches.get(key)
                if arr is None or arr.shape != shape:
                    arr = self.batches[key] = self.host_array(int(np.prod(shape)), dt).reshape(shape)
                if src.dtype == dt:     # mode="clip": "raise" buffers the whole gather (3x slower)
                    np.take(src, rows, axis=0, out=arr, mode="clip")
                else:
                    arr[...] = src[rows]
            staged.append(cl.enqueue_copy(q, rz.buffer_of(slot.node).mem, arr, is_blocking=False))
        self.staged = staged

    def _rows_kept(self, runner, x, y) -> dict:
        """The job's x and y (as the program's input dtypes) in device memory, uploaded at
        the first batch: on a GPU when they take at most DATA_SHARE of its memory and fit
        one allocation; ENGINE_NODE_DATA_ON_DEVICE=1 always, 0 never.  {}: they stay on
        the host, and each batch's rows are gathered there."""
        if self.kept is not None and self.kept[0] is x:
            return self.kept[1]
        mode = os.environ.get("ENGINE_NODE_DATA_ON_DEVICE", "auto").strip().lower() or "auto"
        if mode not in ("auto", "1", "0"):
            raise ValueError(f"ENGINE_NODE_DATA_ON_DEVICE={mode!r}: use auto, 1 or 0")
        types = {name: np.dtype(NP_DTYPES[runner.slots[name].dtype]) for name in ("x", "y")}
        sizes = [src.size * types[name].itemsize for name, src in (("x", x), ("y", y))]
        dev = self.device.cl_device
        possible = max(sizes) <= dev.max_mem_alloc_size and len(x) < 2 ** 31     # the indices go up as int32
        fits = possible and self.is_gpu and sum(sizes) <= DATA_SHARE * dev.global_mem_size
        if mode == "1" and not possible:
            log.warning("ENGINE_NODE_DATA_ON_DEVICE=1, but the job's %d rows (%.1f MB) cannot be kept on the device "
                        "(more than one allocation, %.1f MB, or 2**31 rows): each batch is gathered on the host",
                        len(x), sum(sizes) / 1e6, dev.max_mem_alloc_size / 1e6)
        kept = {}
        if (mode == "1" and possible) or (mode == "auto" and fits):
            kept = {name: self.device.upload(np.ascontiguousarray(src, types[name])) for name, src in (("x", x), ("y", y))}
            log.info("the job's %d rows kept in device memory (%.1f MB): batches gathered there", len(x),
                     sum(sizes) / 1e6)
        elif mode == "auto" and self.is_gpu:
            log.info("the job's %d rows stay in host memory (%.1f MB: more than %d %% of the device's or one "
                     "allocation): each batch is gathered on the host", len(x), sum(sizes) / 1e6, DATA_SHARE * 100)
        self.kept = (x, kept)
        return kept

    def _take_rows(self, src_buf, n: int, src, dtype: str, dst) -> None:
        """dst = the rows of src (kept as the engine dtype `dtype` in src_buf) whose indices
        are rows_buf[:n] (kernels/take_rows.cl.mako)."""
        cols = int(np.prod(src.shape[1:], dtype=np.int64))
        kern = self.kernel("take_rows", dtype=dtype)
        self.device.launch(kern, (-(-cols // 32) * 32 if cols > 1 else 1, n), None,
                           [src_buf.mem, self.rows_buf.mem, np.uint32(n), np.uint32(cols), np.uint32(len(src)),
                            dst.mem])

    def _run_program(self, runner, x, y, rows=None) -> list:
        """Upload the batch and replay forward + backward; the output buffers (loss, grads)."""
        self._upload_batch(runner, x, y, rows)
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
        outs = self._run_program(runner, x, y)
        loss = np.empty(1, np.float32)
        cl.enqueue_copy(self.device.queue, loss, outs[0].mem, is_blocking=False)
        bad = self.count_nonfinite(outs[1:], loss=outs[0])    # in-order queue: the loss is read by then
        return float("nan") if bad else float(loss[0])

    def launch_alone(self, runner, x, y, rows=None) -> tuple:
        """A ring of one's whole step enqueued, nothing waited for: forward + backward, the
        NaN/Inf count of the loss and every gradient added to `found`, the update gated on
        it, then the loss and the count read back behind them.  The host prepares and
        enqueues the next step while the device runs this one (cluster/job_handlers.py);
        settle() gives the loss.  With `rows`, the batch is those rows of x and y."""
        outs = self._run_program(runner, x, y, rows)
        self._count(outs[1:], outs[0])
        self.apply(runner)
        flight = self._read_count(outs[0])
        self.device.queue.flush()
        return flight

    def _read_count(self, loss) -> tuple:
        """The loss (a one-float buffer) and the running NaN/Inf count read behind the step
        queue, into this turn's results buffer (the step before may still be mapped): a
        flight for settle()."""
        res = self.results.get(self.turn)
        if res is None:
            res = self.results[self.turn] = self.host_visible(8)
        return self.read_behind(self.device.queue, res, [loss.mem, self.foundbuf.mem])

    def settle(self, flight) -> float:
        """The loss of a step launch_alone enqueued, once the device has run it; NaN when
        the count was not zero: that step's update was skipped on the device, and so is
        that of any step enqueued after it until rewind()."""
        got, done = flight
        done.wait()
        loss, found = float(got[0]), int(got.view(np.int32)[1])
        got.base.release(self.device.queue)     # unmapped before the turn comes round again
        return float("nan") if found else loss

    def rewind(self, t: int) -> None:
        """After a refused step (and settle() of any step launched behind it): let the
        device finish, clear the count, and set the optimizer's step counters back to `t`
        (the skipped updates advanced them on the host only)."""
        self.device.queue.finish()
        self.clear_nonfinite()
        self.t = self.opt.step_count = t
        if self.snap and self.snap[0] is not None and self.snap[0] > t:
            # taken after the refused step, whose update (and every one since) was skipped:
            # it holds the state at step t
            self.snap = (t, self.snap[1])

    def clear_nonfinite(self) -> None:
        cl.enqueue_fill_buffer(self.device.queue, self.foundbuf.mem, np.int32(0), 0, 4)

    def count_nonfinite(self, bufs, loss=None) -> int:
        """How many values of `bufs` (device buffers of this trainer's parameter sizes, in
        order) and of `loss` (a one-float buffer, if given) are NaN or Inf: one launch of
        kernels/nonfinite.cl.mako over all of them and a few KB of partial counts read back
        (it replaced a reduction per buffer: 7 launches a step for a 3-layer MLP).  The
        caller refuses the step itself, so the device's running count is cleared again."""
        groups = self._count(bufs, loss)
        _, partial, host, _ = self.finder
        cl.enqueue_copy(self.device.queue, host[:groups], partial.mem, is_blocking=True)
        bad = int(host[:groups].sum(dtype=np.uint64))
        if bad:
            self.clear_nonfinite()
        return bad

    def _count(self, bufs, loss=None) -> int:
        """Enqueue the NaN/Inf count (partials per work-group, the total added to `found`);
        returns the number of work-groups."""
        kern, partial, host, most = self.finder
        local = kern.spec.params["wg"]
        # work-groups by size, each work-item at least 32 vectors of 8: a tiny model's check
        # is one work-group, not 64 (on PoCL each costs its own scheduling)
        groups = max(1, min(most, -(-sum(self.sizes) // (8 * 32 * local))))
        args = [a for b, n in zip(bufs, self.sizes) for a in (b.mem, np.uint32(n))]
        args += [loss.mem, np.uint32(1)] if loss is not None else [partial.mem, np.uint32(0)]   # never read
        self.device.launch(kern, (groups * local,), (local,),
                           [*args, partial.mem, self.foundbuf.mem])
        return groups

    def final_launches(self, runner) -> list[int]:
        """For each gradient output of `runner`'s step program, the index in its launch
        list of the last launch that writes it (-1: none): after that launch it is final."""
        return self._last_writes(runner)[1:]

    def _last_writes(self, runner) -> list[int]:
        """final_launches of every output of `runner`'s step program, the loss first."""
        if id(runner) not in self.ready:
            outs = [rz.buffer_of(t.node) for t in runner.step.outs]
            last = [-1] * len(outs)
            for k, it in enumerate(runner.step.items):
                if isinstance(it, launch.Launch):
                    for a in it.args:
                        for i, b in enumerate(outs):
                            if a is b:
                                last[i] = k
            self.ready[id(runner)] = (last, runner)
        return self.ready[id(runner)][0]

    def gradient_order(self, runner) -> list[int] | None:
        """The parameters in the order `runner`'s program finishes their gradients (None
        before its launch list is captured)."""
        if runner.step.items is None:
            return None
        final = self.final_launches(runner)
        return sorted(range(len(final)), key=lambda i: (final[i], i))

    def _piece_plan(self, runner, st) -> tuple:
        """(launches, ends, loss end): `runner`'s launch list as a streamed step replays it,
        for each gradient piece of the stream the index in that list after which the piece
        is final, and the index after which the loss is.  A gradient cut into several
        pieces whose last writer is a GEMM is computed by several launches, a block of its
        rows each (codegen.split_rows), so its first pieces go down while the rest of it is
        computed: on two H200s the 4096 x 4096 weight's 67 MB otherwise all became final
        at once, ~0.7 ms before backward's end (bench/NOTES.md)."""
        if id(runner) in st.plans:
            return st.plans[id(runner)][:3]
        (loss_last, *final), offs = self._last_writes(runner), self.offsets
        cuts = collections.defaultdict(list)      # by parameter: element offsets where a piece ends inside it
        for span in st.spans:
            for i, a, b in span:
                if b < offs[i + 1]:
                    cuts[i].append(b - offs[i])
        items, ends_at, parts = [], {-1: 0}, {}      # ends_at[k]: where launch k's last part is in `items`
        for k, it in enumerate(runner.step.items):
            i = next((i for i in cuts if final[i] == k), None)
            split, p = None, getattr(getattr(it, "spec", None), "params", {})
            if i is not None and p.get("M", 0) * p.get("N", 0) == self.sizes[i]:     # rows of N values
                split = codegen.split_rows(it, sorted({-(-c // p["N"]) for c in cuts[i]}))
            if split and len(split) > 1:
                parts[i] = []
                for sub, rows in split:
                    items.append(sub)
                    parts[i].append((rows * p["N"], len(items)))
            else:
                items.append(it)
            ends_at[k] = len(items)

        def end(i, b):       # the launches that make elements [.., b) of parameter i final
            if i in parts:
                return next(n for upto, n in parts[i] if upto >= b - offs[i])
            return ends_at[final[i]]
        ends = [max(end(i, b) for i, _, b in span) for span in st.spans]
        loss_end = ends_at[loss_last]
        if parts:
            log.info("streamed step: gradient(s) %s computed in %s blocks of rows, each sent as it is done",
                     ", ".join(map(str, parts)), ", ".join(str(len(v)) for v in parts.values()))
        st.plans[id(runner)] = (items, ends, loss_end, runner)
        return items, ends, loss_end

    def streamed_step(self, runner, x, y, weight: float, vote: float, stream, step: int, rows=None,
                      snapshot: int | None = None) -> tuple:
        """Forward + backward with the gradients all-reduced while backward still runs, with
        no host copy (shmstream, every rank summing on its device): the launch list is
        replayed in segments; after the launch that completes a piece of the packed
        gradients, the piece is copied into this rank's shared-memory segment on the copy
        queue (beside the kernels that follow) and published; as every rank's
        piece is published, it is uploaded from their segments into this device's copies
        of their packed gradients (on a third queue, beside the downloads).  The sum (each
        rank's weight times its gradients, in rank order: the same expression, so the same
        bits, on every rank) takes one launch per 8 parameters; its NaN/Inf values are added
        to the running count `found`, and the update gated on that count is enqueued, all
        behind the last uploads on the device (the snapshot, if `snapshot` is a step, before
        them: _tail), so the host is free to go on to the next step while the device
        finishes this one.  The loss and the halt vote (the last piece) are summed on the
        host.  With `rows`, the batch is those rows of x and y (gathered into
        page-locked memory, as launch_alone does).  Returns (local loss, summed weighted
        loss, summed vote, a flight for settle(): NaN when the sum was not finite, seconds
        the host waited for other ranks)."""
        try:
            return self._streamed_step(runner, x, y, weight, vote, stream, step, rows, snapshot)
        except BaseException:
            # a rank left mid-step: let the copies in flight into and out of the shared
            # segments land before anyone (a new ring) reuses or unmaps them
            self.copies.finish()
            self.uploads.finish()
            raise

    def _streamed_step(self, runner, x, y, weight: float, vote: float, stream, step: int, rows, snapshot) -> tuple:
        q, copies, r = self.device.queue, self.copies, stream.links.rank
        marks = [time.perf_counter()]
        begun = cl.enqueue_marker(q) if self.timed else None
        self._upload_batch(runner, x, y, rows)
        if runner.step.items is None:      # first run: capture the launch list, then replay it as below
            runner.step()
        st = self._stream_state(stream)
        self.upload_after = self.sums_read      # never this step's own: its sums wait on the uploads
        outs, spans = [rz.buffer_of(t.node) for t in runner.step.outs], st.spans
        t, views = stream.begin(weight)
        mine = views[r][1]
        landed, maps, computed, (mapped_loss, done) = self._enqueue_pieces(runner, st, outs, t, mine)
        q.flush()
        copies.flush()
        marks.append(time.perf_counter())
        waited, ups, up_ends, gates, flight, tail, go, total = 0.0, [], [], [], None, None, None, None
        # If the sums and the update were captured before, the rest of the step goes on
        # the device's queues now, before any piece is in: each piece's uploads behind a
        # user event (set as every rank's piece comes in), the ranks' weights behind the
        # first piece's (they come with it), the sums behind the uploads, and the update
        # behind one more event (`go`), set once the summed loss is known and finite: the
        # device goes on from the last upload without the host.  The tail (_tail) is
        # enqueued a few launches at a time whenever no piece needs the host.
        if spans and id(runner) in st.sums and (id(runner), True) in self.updates:
            gates, go = [cl.UserEvent(self.device.context) for _ in spans], cl.UserEvent(self.device.context)
            weights_in = self._upload_weights(st, t, [gates[0]])
            for gate, piece in zip(gates, stream.pieces):
                ups.extend(self._uploads(st, views, piece, wait_for=[gate]))
                up_ends.append(ups[-1])
            tail = self._tail(runner, st, outs[0], snapshot, [weights_in, cl.enqueue_marker(self.uploads)], go=go)
            self.uploads.flush()
        try:
            # Own pieces are published as they land and the others' taken as they are all
            # in, each side as far as it can go: waiting for the others' piece p before
            # looking at this rank's piece p + 1 made each piece wait for both ranks' hosts
            # in turn (the device timeline showed the uploads trailing the downloads by 1-2 ms).
            n, out, inn, loss = len(spans), 0, 0, None
            last = n      # the loss and the vote's piece
            at_loss = stream.pieces[last][0]

            def landed_now(p):
                return all(_complete(e) for e in landed[p])

            def tell():
                """Publish this rank's weighted loss and vote (the last piece) once they land.
                The loss is read back as soon as forward has made it, before the gradients'
                pieces, so the hosts have summed it before the last gradients are in, and
                `go` is set without one more exchange after them."""
                done.wait()
                got = mapped_loss.copy()
                mapped_loss.base.release(copies)
                mine[at_loss:at_loss + 2] = (got[0] * np.float32(weight), np.float32(vote))
                stream.publish(views, last, t)
                return got

            while inn < n:
                moved = False
                while out < n and landed_now(out):
                    if out == 0:
                        marks.append(time.perf_counter())
                        if self.last_events:   # the step before has run to its end by now
                            self.timeline.append(self._timeline(*self.last_events))
                            self.last_events = None
                    stream.publish(views, out, t)
                    if maps:
                        maps[out].base.release(copies)
                    out, moved = out + 1, True
                if loss is None and _complete(done):
                    loss, moved = tell(), True
                if total is None and loss is not None and stream.ready(views, last, t):
                    total, moved = self._summed_loss(views, at_loss), True
                while inn < n and stream.ready(views, inn, t):
                    if inn == 0:     # every rank's weight came with its first piece
                        st.whost[t % 2][:] = stream.weights(views)
                    if go is not None:
                        gates.pop(0).set_status(cl.command_execution_status.COMPLETE)
                    else:
                        ups.extend(self._uploads(st, views, stream.pieces[inn]))
                        up_ends.append(ups[-1])
                        self.uploads.flush()
                    inn, moved = inn + 1, True
                if go is not None and total is not None and np.isfinite(total[0]) and not _complete(go):
                    go.set_status(cl.command_execution_status.COMPLETE)
                if not moved and tail is not None:     # nothing to move: enqueue a little more of the tail
                    try:
                        next(tail)
                    except StopIteration as end:
                        tail, flight = None, end.value
                    continue
                if not moved and inn < n:
                    t0, mine_done = time.perf_counter(), out == n
                    at_p, at_o = inn, out
                    told, summed = loss is not None, total is not None
                    stream.until(lambda: stream.ready(views, at_p, t) or (at_o < n and landed_now(at_o))
                                 or (not told and _complete(done))
                                 or (told and not summed and stream.ready(views, last, t)),
                                 f"piece {at_p} of step {step} through shared memory",
                                 lambda: next((j for j, (h, _) in enumerate(views) if h[at_p] < t), None),
                                 longest=POLL_LONGEST_S)
                    if mine_done:     # only the other ranks were waited for
                        waited += time.perf_counter() - t0
            if tail is not None:
                flight, tail = _drain(tail), None
            # kept until the next call has seen its own pieces land (past this call's barrier
            # below): pyopencl's upload events wait for their copies when they are dropped
            st.ups = ups
            marks.append(time.perf_counter())
            if loss is None:
                loss = tell()
            t0 = time.perf_counter()
            stream.wait(views, last, t, step)
            if total is None:
                total = self._summed_loss(views, at_loss)
            waited += time.perf_counter() - t0
            marks.append(time.perf_counter())
            if not np.isfinite(total[0]):        # the update must not apply: the count says so
                self._poison(copies if go is not None else q)
            if go is not None:
                if not _complete(go):
                    go.set_status(cl.command_execution_status.COMPLETE)
            else:
                flight = self._enqueue_tail(runner, st, outs[0], snapshot,
                                            [self._upload_weights(st, t), cl.enqueue_marker(self.uploads)])
        except BaseException:
            if go is not None:     # let the queued tail run, its update skipped, then undo its step count
                if tail is not None:
                    _drain(tail)
                self._poison(copies)     # before the gates open: the update waits on the uploads
                for g in [*gates, go]:
                    if not _complete(g):
                        g.set_status(cl.command_execution_status.COMPLETE)
                q.finish()
                self.rewind(self.t - 1)
            raise
        if self.timed:     # up_ends: each piece's last upload, in piece order
            self.last_events = (begun, computed, [ev[-1] for ev in landed], up_ends, flight[1], self.tail_end)
        q.flush()
        marks.append(time.perf_counter())
        self.phases.append(np.diff(marks))
        return float(loss[0]), float(total[0]), float(total[1]), flight, waited

    def _enqueue_pieces(self, runner, st, outs, t: int, mine: np.ndarray) -> tuple:
        """A streamed step's program enqueued in segments: after the launch that makes a
        piece of the gradients final, the piece's copy into this rank's segment `mine` of
        call `t` (the copy queue); the loss read back behind the last launch that touches
        it, before the pieces.  Returns each piece's landing events, the mapped pieces (to
        release once published), each piece's "computed" marker and the loss's flight."""
        q, copies, offs, stream = self.device.queue, self.copies, self.offsets, st.stream
        items, ends, loss_end = self._piece_plan(runner, st)
        # With pinned segments a piece is copied on the device into the segment's buffer and
        # mapped without waiting (the map puts it in the shared memory), and the loss comes
        # back through read_behind: a read into host memory would hold the host at each
        # piece until backward got there, the launches after it waiting to be enqueued.
        pin = st.pins[(t % 2) * stream.links.world + stream.links.rank] if st.pins else None
        mark, at, landed, maps, computed, read = cl.enqueue_marker(q), 0, [], [], [], None
        size, kind = st.size, (np.uint16 if st.narrow else np.float32)
        mine_k = mine.view(kind)
        for span, (lo, hi), upto in zip(st.spans, stream.pieces, ends):
            if read is None and loss_end <= upto:    # the loss comes back first (streamed_step's tell())
                if loss_end > at:
                    self._replay_flushed(items[at:loss_end])
                    at = loss_end
                mark = cl.enqueue_marker(q)
                read = self.read_behind(copies, st.loss_buf, [outs[0].mem], wait_for=[mark])
            if upto > at:
                self._replay_flushed(items[at:upto])
            # what goes down: a bfloat16 stream's piece rounded to bfloat16 on the step queue
            # into st.own (2 bytes a value), or a float32 piece over several parameters
            # gathered there (kernels/gather.cl.mako, one launch for the piece); else the
            # parameter's own buffer
            packed = st.narrow or len(span) > 1
            if packed:
                self._gather([(outs[1 + i].mem, a - offs[i], b - a, a) for i, a, b in span], st.own, st.narrow)
            first = span[0][0]
            src, off = (st.own.mem, lo) if packed else (outs[1 + first].mem, lo - offs[first])
            if upto > at or packed:
                at, mark = max(at, upto), cl.enqueue_marker(q)
            computed.append(mark)
            if pin is None:
                landed.append([cl.enqueue_copy(copies, mine_k[lo:hi], src, src_offset=size * off, wait_for=[mark],
                                               is_blocking=False)])
            else:
                cl.enqueue_copy(copies, pin, src, byte_count=size * (hi - lo), src_offset=size * off,
                                dst_offset=size * lo, wait_for=[mark])
                got, ev = cl.enqueue_map_buffer(copies, pin, cl.map_flags.READ, size * lo, (hi - lo,), kind,
                                                is_blocking=False)
                landed.append([ev])
                maps.append(got)
            copies.flush()
        self._replay_flushed(items[at:])
        read = read or self.read_behind(copies, st.loss_buf, [outs[0].mem], wait_for=[cl.enqueue_marker(q)])
        return landed, maps, computed, read

    @staticmethod
    def _summed_loss(views, at: int) -> np.ndarray:
        """Every rank's weighted loss and vote (the last piece), summed in rank order as
        every rank does."""
        total = np.empty(2, np.float32)
        localsum._sum_into(total, [d[at:at + 2] for _, d in views])
        return total

    def _uploads(self, st, views, piece, wait_for=None) -> list:
        """Enqueue the other ranks' values of a piece (first, end), one copy each from
        their segments into this device's copies of their packed gradients (st.peer);
        their events (kept: see st.ups).  Behind the last step's sums, which read those
        copies: they run on the step queue, these on a queue of their own, and a rank whose
        device lags (another process's kernels on the same GPU) could otherwise overwrite
        them first."""
        wait_for, (lo, hi) = self._after_sums(wait_for), piece
        kind = np.uint16 if st.narrow else np.float32
        return [cl.enqueue_copy(self.uploads, buf.mem, views[j][1].view(kind)[lo:hi], dst_offset=st.size * lo,
                                is_blocking=False, wait_for=wait_for)
                for j, buf in st.peer.items()]

    def _upload_weights(self, st, t: int, wait_for=None):
        """Enqueue the upload of every rank's weight of call `t` (st.whost[t % 2], filled
        once every rank's first piece is in) into st.wbuf, which the sums read; its event.
        Behind the step before's sums, as the gradients' uploads (_uploads)."""
        return cl.enqueue_copy(self.uploads, st.wbuf.mem, st.whost[t % 2], is_blocking=False,
                               wait_for=self._after_sums(wait_for))

    def _after_sums(self, wait_for=None):
        """`wait_for` and the step before's sums (upload_after): an upload into a buffer
        those sums read must not land before they have run."""
        if self.upload_after is None:
            return wait_for
        return [*(wait_for or ()), self.upload_after]

    def _gather(self, runs, dst, narrow: bool = False) -> None:
        """Each (buffer, first, count, at) run of float32 values into dst[at:at + count], on
        the step queue (kernels/gather.cl.mako), MANY_PER_LAUNCH runs a launch; `narrow`:
        dst holds their bfloat16 bits, rounded as the host transport rounds."""
        for k in range(0, len(runs), MANY_PER_LAUNCH):
            part = runs[k:k + MANY_PER_LAUNCH]
            args = [a for buf, first, n, at in part for a in (buf, np.uint32(first), np.uint32(n), np.uint32(at))]
            self._launch_spread(self.kernel("gather", count=len(part), narrow=bool(narrow)),
                                max(n for _, _, n, _ in part), [*args, dst.mem])

    def _sums(self, runner, st):
        """Every parameter's sum over the ranks, each rank's weight (read from st.wbuf)
        times its gradient in rank order, into float32 tensors the update then reads
        (recorded as st.sums), MANY_PER_LAUNCH parameters a launch: a bfloat16 stream's
        from every rank's packed bfloat16 values, this rank's too (kernels/bf16_sum.cl.mako),
        else this rank's values from `runner`'s gradient outputs and the others' from their
        packed copies (kernels/grad_sum.cl.mako).  A generator that yields after each launch
        and returns the sums' buffers."""
        if id(runner) not in st.sums:
            sums = [tensor(np.zeros(sh, np.float32), device=self.device) for sh in self.shapes]
            for t in sums:
                t.realize()
            own = [rz.buffer_of(t.node) for t in runner.step.outs[1:]]
            st.sums[id(runner)] = (own, [rz.buffer_of(t.node) for t in sums], sums, runner)
        own, bufs, _, _ = st.sums[id(runner)]
        r, world = st.stream.links.rank, st.stream.links.world
        live = [i for i, n in enumerate(self.sizes) if n]
        for k in range(0, len(live), MANY_PER_LAUNCH):
            part = live[k:k + MANY_PER_LAUNCH]
            offs, sizes = [np.uint32(self.offsets[i]) for i in part], [np.uint32(self.sizes[i]) for i in part]
            if st.narrow:
                ranks = [(st.own if j == r else st.peer[j]).mem for j in range(world)]
                args = [a for i, off, n in zip(part, offs, sizes) for a in (bufs[i].mem, off, n)]
                kern = self.kernel("bf16_sum", ranks=world, count=len(part))
            else:
                ranks = [st.peer[j].mem for j in range(world) if j != r]
                args = [a for i, off, n in zip(part, offs, sizes) for a in (own[i].mem, bufs[i].mem, off, n)]
                kern = self.kernel("grad_sum", ranks=world, rank=r, count=len(part))
            self._launch_spread(kern, max(self.sizes[i] for i in part), [*ranks, st.wbuf.mem, *args])
            yield
        return bufs

    def _enqueue_tail(self, runner, st, loss, snapshot, wait_for) -> tuple:
        """_tail enqueued at once; returns its flight."""
        return _drain(self._tail(runner, st, loss, snapshot, wait_for))

    def _tail(self, runner, st, loss, snapshot, wait_for, go=None):
        """A streamed step's end on the step queue: the rollback snapshot if `snapshot` is
        a step (first: only the update changes what it copies, so it runs while the pieces
        travel instead of between the last upload and the update); then, behind `wait_for`
        (the last uploads, the ranks' weights among them), the sums (each rank's weight
        times its gradients, in rank order: the same bits on every rank), their NaN/Inf
        values added to `found`, the loss and the count read behind (the flight), and the
        update gated on the count, and also behind `go` if
        given (a user event the host sets once it knows the summed loss: only the update
        has to wait for that, the sums run while the hosts exchange their losses).  A
        generator that yields every TAIL_CHUNK launches and returns the flight, so the
        exchange loop can enqueue it while no piece needs the host: NVIDIA's driver takes
        11-90 us a launch, and while the host enqueued all ~20 at once the pieces that came
        down waited to go up (bench/NOTES.md).  No rank rewrites a segment this call read
        before every rank has published a piece of the next call, which it copies only
        after its queue has passed this barrier."""
        if snapshot is not None:
            self.snapshot(snapshot)
        cl.enqueue_barrier(self.device.queue, wait_for=wait_for)
        sums = yield from self._sums(runner, st)
        self.sums_read = cl.enqueue_marker(self.device.queue)     # the next step's uploads wait for it
        self._count(sums)
        flight = self._read_count(loss)
        if go is not None:
            cl.enqueue_barrier(self.device.queue, wait_for=[go])
        yield
        yield from self._apply_steps(runner, streamed=True)
        # the timeline's "updated": a marker enqueued later, at the host's end of the step,
        # would end no earlier than the host got there
        self.tail_end = cl.enqueue_marker(self.device.queue) if self.timed else None
        return flight

    def _replay_chunks(self, items, every: int = TAIL_CHUNK):
        """launch.replay of `items`, yielding every `every` launches."""
        for k in range(0, len(items), every):
            launch.replay(items[k:k + every], self.device)
            yield

    def _poison(self, queue) -> None:
        """Make the running NaN/Inf count nonzero before a queued update runs (waited for
        on `queue`; the step queue may be held behind a user event)."""
        cl.enqueue_fill_buffer(queue, self.foundbuf.mem, np.int32(1), 0, 4)
        queue.finish()

    def _replay_flushed(self, items) -> None:
        """launch.replay, the queue flushed every FLUSH_EVERY launches: a streamed step
        has no step queued ahead of it, so the device would idle until the host had
        enqueued all launches up to the first piece's end (most of the step, for a model
        whose gradients fit one piece)."""
        for _ in self._replay_chunks(items, FLUSH_EVERY):
            self.device.queue.flush()

    def phase_report(self) -> str:
        """Where the last streamed steps' host time went (ms, medians): for the node's log;
        with ENGINE_NODE_TIMELINE=1, when their events ended on the device too."""
        med = np.median(self.phases, axis=0) * 1e3
        text = ", ".join(f"{name} {v:.2f}" for name, v in zip(STREAM_PHASES, med)) + f" ms (median of {len(self.phases)})"
        if self.timeline:
            dev = np.nanmedian(np.array([t for t, _ in self.timeline], dtype=np.float64), axis=0)
            text += "; on the device, ms from the step's start: " + ", ".join(
                f"{name} {v:.2f}" for name, v in zip(TIMELINE, dev))
            shapes = {tuple(len(x) for x in p) for _, p in self.timeline}
            if len(shapes) == 1 and len(set(*shapes)) == 1:     # the steps had the same pieces, all uploaded
                per = np.nanmedian(np.array([p for _, p in self.timeline], dtype=np.float64), axis=0)
                text += "; per piece computed / down / up: " + ", ".join("/".join(f"{v:.2f}" for v in c) for c in per.T)
            self.timeline.clear()
        return text

    @staticmethod
    def _timeline(begun, computed, down, up, summed, updated) -> list:
        """One streamed step's device times (ms after `begun`): TIMELINE's, then each
        piece's computed, down and up times (lists); NaN where the driver keeps no profile
        of an event."""
        def at(ev):
            try:
                return (ev.profile.end - begun.profile.end) * 1e-6
            except Exception:     # no event, or no profiling info for its kind of command
                return float("nan")
        up = up or [None]
        pieces = [[at(e) for e in evs] for evs in (computed, down, up)]
        return [at(computed[0]), at(down[0]), at(up[0]), at(computed[-1]), at(down[-1]), at(up[-1]), at(summed),
                at(updated)], pieces

    def _stream_state(self, stream) -> "_StreamState":
        """What streamed_step keeps per stream (made at its first step with it): see
        _StreamState.  A new stream drops the updates captured over the old one's sums."""
        if self.streaming is None or self.streaming.stream is not stream:
            self.streaming = _StreamState(self, stream)
            # what was captured over the last stream's sums reads buffers nobody writes now
            self.updates = {k: v for k, v in self.updates.items() if not (k and k[1])}
        return self.streaming

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
        """Whether every value in the gradient buffers is finite, decided on the device
        (count_nonfinite): the host scan of 20 M floats it replaces took ~4.5 ms on 4
        threads."""
        return self.count_nonfinite(self.gbufs) == 0

    def apply(self, runner=None, streamed: bool = False) -> None:
        """The fused optimizer step on the gradient buffers, on `runner`'s gradient
        outputs (a ring of one: no copy), or on the sums streamed_step made for `runner`.
        Each is captured once, then replayed."""
        _drain(self._apply_steps(runner, streamed))

    def _apply_steps(self, runner=None, streamed: bool = False):
        """apply() as a generator that yields every TAIL_CHUNK launches of a replay."""
        key = None if runner is None else (id(runner), streamed)
        if key not in self.updates:
            grads = self.g if runner is None else \
                self.streaming.sums[id(runner)][2] if streamed else runner.step.outs[1:]
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
            yield from self._replay_chunks(self.updates[key][0])
        self.t += 1

    # --- rollback snapshot on the device ------------------------------------------------------
    def snapshot(self, step: int) -> None:
        """Device-side copy of weights and optimizer state (no host traffic), one launch."""
        bufs = self.wbufs + self.sbufs
        if self.snap is None:
            self.snap = (step, [self.device.alloc(b.nbytes) for b in bufs])
        copies = self.snap[1]
        self._copy_all(bufs, copies)
        self.snap = (step, copies)

    def restore(self) -> int:
        step, copies = self.snap
        self._copy_all(copies, self.wbufs + self.sbufs)
        self.device.synchronize()
        self.t = self.opt.step_count = step
        return step

    def _copy_all(self, srcs, dsts) -> None:
        """Each of `srcs` into the matching one of `dsts` (float32 buffers of the same sizes):
        kernels/copy_many.cl.mako, built at the first snapshot."""
        sizes = [s.nbytes // 4 for s in srcs]
        args = [a for s, d, n in zip(srcs, dsts, sizes) for a in (s.mem, d.mem, np.uint32(n))]
        self._launch_spread(self.kernel("copy_many", count=len(srcs)), -(-max(sizes) // 4), args)   # a float4 each

    def _launch_spread(self, kern, most: int, args) -> None:
        """A kernel whose work-items stride over whole buffers, `most` items of work in the
        largest: on a GPU enough work-items to keep the memory busy (one per item of work,
        up to ~1 M), on a CPU _spread_groups work-groups."""
        if self.is_gpu:
            local = 256
            groups = max(int(self.device.cl_device.max_compute_units), min(4096, -(-most // local)))
        else:
            local, groups = 64, self._spread_groups()
        self.device.launch(kern, (groups * local,), (local,), args)

    # --- downloads on request -------------------------------------------------------------------
    def weights(self) -> list[np.ndarray]:
        return [self.device.download(b, s, "float32") for b, s in zip(self.wbufs, self.shapes)]

    def kernel(self, template: str, **params):
        """build_kernel's kernel, built once per trainer."""
        key = (template, *params.items())
        if key not in self.kernels:
            self.kernels[key] = self.build_kernel(template, **params)
        return self.kernels[key]

    def build_kernel(self, template: str, **params):
        """A kernels/<template>.cl.mako of this module's own, built for this device."""
        params = {"name": f"mao_{template}" + "".join(f"_{v}" for v in params.values()), **params}
        return self.device.build(KernelSpec(params["name"], template, params, kernels.render(template, **params)))

    def _spread_groups(self) -> int:
        """Work-groups of a kernel that strides over whole buffers: 4 per compute unit, at
        least 64 (on a 2-core PoCL, 16 left the NaN count of 1.9 M floats at 0.73 ms against
        0.37, bench/NOTES.md), at most 1024 (PoCL schedules each one)."""
        return max(64, min(1024, 4 * int(self.device.cl_device.max_compute_units)))

    def _partials_kernel(self, template: str, dtype, slots: int = 1, **params) -> tuple:
        """(kernel, its partial results on the device, their host array, work-groups) of a
        kernels/<template>.cl.mako whose work-groups each write one partial result (`slots`
        launches side by side); built when the trainer is made, not in the middle of the
        steps."""
        groups = self._spread_groups()
        params = {"name": f"mao_{template}" + "".join(f"_{v}" for v in params.values()), "wg": 64, **params}
        spec = KernelSpec(params["name"], template, params, kernels.render(template, **params),
                          global_size=(groups * params["wg"],), local_size=(params["wg"],))
        host = np.empty(groups * slots, dtype)
        return self.device.build(spec), self.device.alloc(host.nbytes), host, groups

    def checksum(self) -> str:
        """The weights' checksum (hostpool.weights_checksum's value) computed on the device
        (kernels/checksum.cl.mako): a few thousand 64-bit partial sums come back instead of
        the weights (the big MLP's 80 MB cost 33 ms to download and CRC-32 on the host). For
        the digest every K steps."""
        return self.checksum_behind()()

    def checksum_behind(self):
        """checksum() enqueued behind what the step queue holds, not waited for: a callable
        that waits for it and returns it.  A run's digest every K steps (job_handlers) is
        read a step later, so the host does not wait for the device to drain its queue."""
        if self.checksum_read is not None:     # the one before was never read: its mapping goes first
            self.checksum_read()
        ck, partial, host, groups = self.summer
        local = ck.spec.params["wg"]
        for k, (buf, a, b) in enumerate(zip(self.wbufs, self.offsets, self.offsets[1:])):
            self.device.launch(ck, (groups * local,), (local,),
                               [buf.mem, np.uint32(b - a), np.uint64(a), partial.mem, np.uint32(k * groups)])
        if self.checksum_buf is None:
            self.checksum_buf = self.host_visible(host.nbytes)
        q = self.device.queue
        cl.enqueue_copy(q, self.checksum_buf, partial.mem, byte_count=host.nbytes)
        got, ev = cl.enqueue_map_buffer(q, self.checksum_buf, cl.map_flags.READ, 0, host.shape, host.dtype,
                                        is_blocking=False)
        q.flush()
        value = []

        def read() -> str:
            if not value:
                ev.wait()
                value.append(f"{int(got.sum(dtype=np.uint64)):016x}")
                got.base.release(q)
                self.checksum_read = None
            return value[0]
        self.checksum_read = read
        return read

    def state(self) -> list[np.ndarray]:
        n = len(self.shapes)
        return [self.device.download(b, self.shapes[k % n], "float32") for k, b in enumerate(self.sbufs)]


class _StreamState:
    """A DeviceTrainer's state for one shmstream.Stream, made at its first streamed step:
    `pins`, USE_HOST_PTR buffers over every segment, held while the stream lives (NVIDIA's
    driver pins the pages of such a buffer, and plain copies from and to them then run at
    DMA speed: 54 GB/s against 9-17 for unpinned pages, bench/NOTES.md); `peer`, by rank,
    this device's copies of the other ranks' packed gradients; `spans`, per gradient piece,
    the (parameter, first, end) runs of the packed buffer it covers; `sums`, by id(runner),
    the sums' (this rank's gradient buffers, the sums' buffers, their tensors, runner kept
    alive), from _sums."""

    def __init__(self, tr: DeviceTrainer, stream):
        self.stream = stream
        flags = cl.mem_flags.READ_WRITE | cl.mem_flags.USE_HOST_PTR
        try:
            self.pins = [cl.Buffer(tr.device.context, flags, hostbuf=d) for views in stream.views for _, d in views]
        except cl.Error as e:     # e.g. a locked-memory limit: the same copies, unpinned (slower)
            log.warning("shared-memory segments not pinned for DMA (%s); streaming through pageable copies", e)
            self.pins = []
        others = [j for j in range(stream.links.world) if j != stream.links.rank]
        self.narrow = bool(getattr(stream, "narrow", False))
        # the other ranks' packed gradients (bfloat16: 2 bytes a value), each piece uploaded
        # in one copy; own: this rank's packed (bfloat16) or gathered (a float32 piece over
        # several parameters) values, which go down a piece in one copy
        n, self.size = sum(tr.sizes), 2 if self.narrow else 4
        self.peer = {j: tr.device.alloc(self.size * n) for j in others}
        offs = tr.offsets
        self.spans = [[(i, max(lo, offs[i]), min(hi, offs[i + 1])) for i in range(len(tr.sizes))
                       if offs[i] < hi and offs[i + 1] > lo] for lo, hi in stream.pieces[:-1]]
        self.own = tr.device.alloc(self.size * n) if self.narrow or any(len(sp) > 1 for sp in self.spans) else None
        self.sums = {}
        self.plans = {}          # by id(runner): DeviceTrainer._piece_plan's
        self.ups = []            # the last call's upload events (streamed_step)
        # the loss of each streamed step comes back through this (mapped, not read)
        self.loss_buf = tr.host_visible(4)
        # every rank's weight of a call, uploaded from whost[call % 2] once every rank's
        # first piece is in (their weights come with it) into rank_w, which the sums read:
        # so the sums and the update can be enqueued before the weights are known
        world = stream.links.world
        self.rank_w = tensor(np.ones(world, np.float32), device=tr.device)
        self.rank_w.realize()
        self.wbuf = rz.buffer_of(self.rank_w.node)
        self.whost = [tr.host_array(world) for _ in range(2)]


def _complete(ev) -> bool:
    return ev.command_execution_status == cl.command_execution_status.COMPLETE


def _drain(steps):
    """Run a generator to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value
