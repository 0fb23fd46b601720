"""One OpenCL device: its context and queue, a pool of buffers, launches, and
what its compiler is known to take (the probe); building and caching programs is the
ProgramCacheMixin's job (engine/program_cache.py)."""
from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np
import pyopencl as cl

from .build_child import _BuildWorker, _safe_mode
from .codegen import set_gemm_vector_width
from .device_buffer import NP_DTYPES, Buffer
from .probe import FIRST_TRIED, _load_profiles, _probe, _profile_key, _save_profile
from .program_cache import CompiledKernel, ProgramCacheMixin, _build_workers

__all__ = ["Device", "DEVICE_ALIASES", "timing", "start_timing", "stop_timing"]

_KINDS = {cl.device_type.GPU: "gpu", cl.device_type.CPU: "cpu", cl.device_type.ACCELERATOR: "accelerator"}
# ENGINE_DEVICE aliases -> what the device's platform, name or vendor contains (plus the kinds)
_ALIAS_NEEDLES = {"pocl": ("portable computing language", "pocl"), "nvidia": ("nvidia",),
                  "amd": ("advanced micro devices", "amd"), "intel": ("intel",), "oclgrind": ("oclgrind",)}
DEVICE_ALIASES = tuple(_ALIAS_NEEDLES) + ("cpu", "gpu")

# Launches are timed (their events carry device times) only while someone asks: an
# engine.profile() block, ENGINE_DEBUG>=4, a node's device timeline.  Meanwhile each device
# enqueues on a second queue made with profiling enabled; the rest of the time on one
# without, since NVIDIA's driver costs the host ~6 us more per launch on a profiling
# queue, 15-20 % of a small MLP's compiled step (bench/NOTES.md).
_timers = 0


def start_timing() -> None:
    global _timers
    _timers += 1


def stop_timing() -> None:
    global _timers
    _timers = max(0, _timers - 1)


@contextlib.contextmanager
def timing():
    """Every device's work enqueued inside goes on its profiling queue."""
    start_timing()
    try:
        yield
    finally:
        stop_timing()


class Device(ProgramCacheMixin):
    """One OpenCL device: context, in-order queue (a profiling one while launches are
    timed: `timing`), buffer pool, program cache."""

    def __init__(self, cl_device, index: int):
        self.cl_device = cl_device
        self.index = index
        self.platform = cl_device.platform.name.strip()
        self.name = cl_device.name.strip()
        self.driver = cl_device.driver_version.strip()
        self.vendor = cl_device.vendor.strip()
        self.kind = _KINDS.get(cl_device.type & ~cl.device_type.DEFAULT, "other")
        self.is_pocl = "portable computing language" in self.platform.lower() or "pocl" in self.platform.lower()
        self._ctx = None
        self._queue = None
        self._timed_queue = None        # made at the first timing()
        self._timed = False             # whether work goes on _timed_queue now
        self._switch_lock = threading.Lock()
        self._pool: dict[int, list] = {}
        self._programs: dict[str, CompiledKernel] = {}
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._caps = None
        self._provisional = None        # the profile plans use while the probe runs in the background
        self._build_worker = None
        self._more_workers: list = []   # build children 1, 2, ... that prebuild uses beside the first
        self._no_worker = False
        self._prebuilt: dict = {}       # key -> CompiledKernel compiled by prebuild, until build asks
        self._expected: list = []       # specs of kernels needed soon, built with the next prebuild's
        self._group_programs: dict = {}  # group key -> the program holding a group's kernels
        # e.g. -cl-opt-disable under Oclgrind, whose uninitialised-value check cannot follow
        # the `freeze` instructions LLVM's optimiser emits
        self._extra_options = os.environ.get("ENGINE_BUILD_OPTIONS", "").strip()
        # builds: kernels compiled; programs: groups of them compiled as one program (prebuild);
        # beside_probe: kernels prebuilt while the probe ran; dropped_after_probe: of those,
        # built for a width the probe then rejected
        self.stats = {"builds": 0, "disk_hits": 0, "memory_hits": 0, "build_s": 0.0, "rejected": 0,
                      "programs": 0, "group_failures": 0, "beside_probe": 0, "dropped_after_probe": 0}

    def __repr__(self):
        return f"Device({self.index}: {self.platform} / {self.name}, {self.kind}, driver {self.driver})"

    def describe(self) -> dict:
        d = self.cl_device
        probe = _load_profiles().get(_profile_key(self)) if self._caps is None else self._caps
        return {"index": self.index, "platform": self.platform, "name": self.name, "vendor": self.vendor,
                "kind": self.kind, "driver": self.driver, "compute_units": d.max_compute_units,
                "global_mem_mb": d.global_mem_size // 2**20, "max_work_group_size": d.max_work_group_size,
                "opencl": d.version.strip(), "aliases": self.aliases(),
                "probe": None if probe is None else {k: probe.get(k) for k in (
                    "gemm_vector_width", "tiled_max", "local_memory", "works", "dropped", "probe_s")}}

    def aliases(self) -> list:
        """The short names ENGINE_DEVICE accepts for this device (besides any part of its line)."""
        text = f"{self.platform} {self.name} {self.vendor}".lower()
        out = [a for a, needles in _ALIAS_NEEDLES.items() if any(n in text for n in needles)]
        if self.is_pocl and "pocl" not in out:
            out.append("pocl")
        return out + [self.kind]

    def selector_text(self) -> str:
        """Everything ENGINE_DEVICE is matched against: the device's line in ``engine devices``
        (platform, name, kind, driver), its vendor and OpenCL version."""
        return " ".join([self.platform, self.name, self.vendor, f"kind={self.kind}", self.kind,
                         f"driver={self.driver}", self.driver, self.cl_device.version.strip()]).lower()

    @property
    def context(self):
        if self._ctx is None:
            self._ctx = cl.Context([self.cl_device])
            self._queue = cl.CommandQueue(self._ctx)
            try:    # first use: the probe (from disk once done), so the first plan has the right GEMM width
                if not self._probe_in_background():
                    self.capabilities()
            except Exception as exc:    # never let the probe machinery break the device itself
                warnings.warn(f"device probe of {self.name} failed ({exc!r}); default kernel variants used")
        return self._ctx

    @property
    def queue(self):
        """The in-order queue everything of this device goes on; while launches are timed
        (timing()), the profiling one.  Each switch puts a barrier on the queue switched to
        behind a marker of the other, so the order stays that of one in-order queue."""
        if self._ctx is None:
            self.context
        if (_timers > 0) != self._timed:
            self._switch_queue()
        return self._timed_queue if self._timed else self._queue

    def _switch_queue(self) -> None:
        # two threads must not both switch; not _lock, which a buffer freed meanwhile takes
        with self._switch_lock:
            if (_timers > 0) == self._timed:
                return
            if self._timed_queue is None:
                self._timed_queue = cl.CommandQueue(self._ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
            old, new = (self._timed_queue, self._queue) if self._timed else (self._queue, self._timed_queue)
            cl.enqueue_barrier(new, wait_for=[cl.enqueue_marker(old)])
            old.flush()
            self._timed = not self._timed

    # --- memory ---------------------------------------------------------------------
    def alloc(self, nbytes: int) -> Buffer:
        nbytes = max(int(nbytes), 4)
        with self._lock:
            free = self._pool.get(nbytes)
            mem = free.pop() if free else None
        if mem is None:
            mem = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)
        return Buffer(self, mem, nbytes)

    def _release(self, mem, nbytes):
        with self._lock:
            self._pool.setdefault(nbytes, []).append(mem)

    def upload(self, array: np.ndarray, dest: Buffer | None = None) -> Buffer:
        array = np.ascontiguousarray(array)
        buf = dest or self.alloc(array.nbytes)
        if array.nbytes:
            cl.enqueue_copy(self.queue, buf.mem, array, is_blocking=True)
        return buf

    def download(self, buf: Buffer, shape, dtype: str) -> np.ndarray:
        out = np.empty(shape, dtype=NP_DTYPES[dtype])
        if out.nbytes:
            cl.enqueue_copy(self.queue, out, buf.mem, is_blocking=True)
        return out.astype(bool) if dtype == "bool" else out

    def copy(self, src: Buffer, dst: Buffer, nbytes: int):
        if nbytes:
            cl.enqueue_copy(self.queue, dst.mem, src.mem, byte_count=nbytes)

    def synchronize(self):
        self.queue.finish()
        if self._timed_queue is not None:     # what went on the other one before a switch is done too
            (self._queue if self._timed else self._timed_queue).finish()

    # --- programs (building and caching them: engine/program_cache.py) ---------------
    @property
    def identity(self) -> str:
        """Platform, device and driver: what program binaries and probe results are valid for."""
        return f"{self.platform}|{self.name}|{self.driver}"

    # --- the build child and the device probe -----------------------------------------------
    def _worker(self, slot: int = 0) -> "_BuildWorker":
        """Build child number ``slot``: the first builds and probes; prebuild uses more at once."""
        if slot:
            with self._lock:
                more = [w for w in self._more_workers if w.owner == os.getpid()]     # a fork's are not ours
                while len(more) < slot:
                    more.append(_BuildWorker(self))
                self._more_workers = more
            return more[slot - 1]
        if self._build_worker is None or self._build_worker.owner != os.getpid():   # none yet, or forked
            self._build_worker = _BuildWorker(self)
        return self._build_worker

    def capabilities(self) -> dict:
        """What this device's compiler builds and runs (probed once per device and driver,
        in the build child, and remembered on disk): ``gemm_vector_width``, ``tiled_max``,
        ``dropped`` (variants that crashed, hung or computed wrong numbers) and more."""
        if self._caps is None:
            with self._probe_lock:
                if self._caps is None:
                    prof = _load_profiles().get(_profile_key(self))
                    if prof is None:
                        self._warm_more_workers()
                        prof = _probe(self)
                        if not prof.get("transient"):
                            _save_profile(self, prof)
                    self._caps, self._provisional = prof, None
                    self._tell_codegen(prof)
        return self._caps

    def _probe_in_background(self) -> bool:
        """On a cold start where build children launch what they build (PoCL), the probe runs
        on build child 0 in the background while the first schedule is lowered and its
        kernels are built, for the width the probe tries first, on the other children
        (prebuild). Nothing is launched in this process before the probe has answered
        (prebuild and build wait for it), and what was built for a width the probe then
        rejects is dropped. Elsewhere, or with a profile on disk: False (probe as before)."""
        if (self._caps is not None or self.kind != "cpu" or _safe_mode(self) != "launch"
                or _build_workers() < 2 or _load_profiles().get(_profile_key(self)) is not None):
            return False
        self._provisional = {**FIRST_TRIED, "provisional": True}
        self._tell_codegen(self._provisional)
        threading.Thread(target=self._probe_quietly, daemon=True, name="engine-probe").start()
        return True

    def _probe_quietly(self):
        try:
            self.capabilities()
        except Exception:   # the next capabilities() call probes again, in the caller's thread
            pass

    def planning_profile(self) -> dict:
        """The profile to lower and group kernels by now: the probed one, or while the probe
        runs in the background, the provisional one (never waits)."""
        caps, provisional = self._caps, self._provisional
        if caps is not None:
            return caps
        return provisional if provisional is not None else self.capabilities()

    def probe_pending(self) -> bool:
        return self._caps is None and self._provisional is not None

    def _remember(self, update):
        prof = dict(self.capabilities())
        update(prof)
        self._caps = prof
        _save_profile(self, prof)
        self._tell_codegen(prof)

    def _tell_codegen(self, prof):
        set_gemm_vector_width(self.kind, prof.get("gemm_vector_width", 16))

    def launch(self, ck: CompiledKernel, global_size, local_size, args, offset=None):
        if ck.eager is None:
            ck.eager = ck.new_kernel()
        return self.enqueue_kernel(ck.eager.set(args), global_size, local_size, offset)

    def enqueue_kernel(self, kernel, global_size, local_size, offset=None):
        """A kernel object whose arguments are already set (program_cache.ArgsKept)."""
        return cl.enqueue_nd_range_kernel(self.queue, kernel, tuple(global_size),
                                          None if local_size is None else tuple(local_size),
                                          None if offset is None else tuple(offset))
