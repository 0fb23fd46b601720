"""The OpenCL runtime: devices, buffers (pooled), programs (cached in memory and on disk),
launches and profiling events. This is the only engine module that imports pyopencl (the
build child, engine/_buildworker.py, is a separate process).

A driver's OpenCL compiler is untrusted code: it can abort, segfault or hang on valid
OpenCL C. So a program that is not in the cache is built (and, on drivers that compile
at first launch such as PoCL, launched once) in a child process first; the user's process
only loads the binary that came back. On its first use a device is probed there (the
kernel shapes we generate: GEMM vector widths, local-memory tiles, elementwise and
reduce kernels); what crashed or hung is remembered per device and driver in
``<cache dir>/devices.json`` and the engine uses the safer variant, with one warning.
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import pyopencl as cl

__all__ = ["Device", "Buffer", "BuildError", "DeviceNotFound", "devices", "default_device",
           "set_default_device", "cache_dir", "NP_DTYPES", "CompiledKernel", "CompilerFallbackWarning",
           "CacheEntryWarning", "DEVICE_ALIASES"]

NP_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "bool": np.uint8}
_KINDS = {cl.device_type.GPU: "gpu", cl.device_type.CPU: "cpu", cl.device_type.ACCELERATOR: "accelerator"}
# ENGINE_DEVICE aliases -> what the device's platform, name or vendor contains (plus the kinds)
_ALIAS_NEEDLES = {"pocl": ("portable computing language", "pocl"), "nvidia": ("nvidia",),
                  "amd": ("advanced micro devices", "amd"), "intel": ("intel",), "oclgrind": ("oclgrind",)}
DEVICE_ALIASES = tuple(_ALIAS_NEEDLES) + ("cpu", "gpu")


class BuildError(RuntimeError):
    """A kernel failed to compile: carries the build log, template, parameters and source path."""


class DeviceNotFound(LookupError):
    pass


class CompilerFallbackWarning(RuntimeWarning):
    """The device's OpenCL compiler crashed or hung on a kernel variant; a safer one is used."""


class CacheEntryWarning(RuntimeWarning):
    """An on-disk program cache entry did not match its source, options or device; rebuilt."""


def cache_dir() -> str:
    root = os.environ.get("ENGINE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "many-as-one")
    os.makedirs(root, exist_ok=True)
    return root


class Buffer:
    """A device allocation; returns its memory to the device pool when collected."""
    __slots__ = ("device", "mem", "nbytes", "__weakref__")

    def __init__(self, device: "Device", mem, nbytes: int):
        self.device, self.mem, self.nbytes = device, mem, nbytes

    def __del__(self):
        try:
            self.device._release(self.mem, self.nbytes)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass


class CompiledKernel:
    """A built kernel with the description it came from (name, source, template, params)."""
    __slots__ = ("spec", "kernel", "device")

    def __init__(self, spec, kernel, device):
        self.spec, self.kernel, self.device = spec, kernel, device


class _BundledSpec:
    """The description of a kernel that came from a bundle rather than from codegen."""

    args, global_size, local_size, fused, render = (), (), None, (), None

    def __init__(self, name, source):
        self.name, self.source, self.template, self.params = name, source, "bundle", {}


class Device:
    """One OpenCL device: context, in-order profiling queue, buffer pool, program cache."""

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
        self._pool: dict[int, list] = {}
        self._programs: dict[str, CompiledKernel] = {}
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._caps = None
        self._build_worker = None
        self._no_worker = False
        # e.g. -cl-opt-disable under Oclgrind, whose uninitialised-value check cannot follow
        # the `freeze` instructions LLVM's optimiser emits
        self._extra_options = os.environ.get("ENGINE_BUILD_OPTIONS", "").strip()
        self.stats = {"builds": 0, "disk_hits": 0, "memory_hits": 0, "build_s": 0.0, "rejected": 0}

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
            self._queue = cl.CommandQueue(self._ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
            try:    # first use: the probe (from disk once done), so the first plan has the right GEMM width
                self.capabilities()
            except Exception as exc:    # never let the probe machinery break the device itself
                warnings.warn(f"device probe of {self.name} failed ({exc!r}); default kernel variants used")
        return self._ctx

    @property
    def queue(self):
        self.context
        return self._queue

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

    # --- programs -------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Platform, device and driver: what program binaries and probe results are valid for."""
        return f"{self.platform}|{self.name}|{self.driver}"

    def _cache_key(self, source: str, options: str) -> str:
        ident = "\0".join([self.platform, self.name, self.driver, cl.VERSION_TEXT, options, source])
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    def build(self, spec, options: str = "") -> CompiledKernel:
        """Build ``spec`` (a codegen.KernelSpec); memory cache, then disk cache, then compile
        (in the build child, falling back to a safer variant if the compiler crashes).
        ENGINE_BUILD_OPTIONS (read when the device is first listed) is appended to ``options``."""
        if self._extra_options:
            options = f"{options} {self._extra_options}".strip()
        key = self._cache_key(spec.source, options)
        hit = self._programs.get(key)
        if hit is not None:
            self.stats["memory_hits"] += 1
            return hit
        t0 = time.perf_counter()
        spec = self._specialize(spec)
        vkey = self._cache_key(spec.source, options) if spec.source is not None else key
        program = self._load_cached(spec, options, vkey)
        if program is not None:
            self.stats["disk_hits"] += 1
        else:
            program, spec, binary = self._build_new(spec, options, vkey)
            self._store_binary(spec, options, self._cache_key(spec.source, options), binary)
            self.stats["builds"] += 1
        self.stats["build_s"] += time.perf_counter() - t0
        ck = CompiledKernel(spec, cl.Kernel(program, spec.name), self)
        self._programs[key] = ck
        return ck

    def _specialize(self, spec):
        """The variant of ``spec`` this device's compiler is known to take (narrower GEMM vectors)."""
        if getattr(spec, "template", None) != "gemm" or getattr(spec, "render", None) is None:
            return spec
        cap = self.capabilities().get("gemm_vector_width", 16)
        from .codegen import with_vector_width
        return with_vector_width(spec, cap)

    # On-disk entries: one JSON header line (what the binary was built from: source, options,
    # device and driver, pyopencl; the binary's size and SHA-256), then the binary. Checked
    # before the driver sees the bytes, so a truncated, corrupted or swapped entry is rebuilt,
    # never run. The hashes are not a signature: whoever can write the cache directory (the
    # user's own ~/.cache) can write matching ones; they stop accidents and stale or
    # misplaced files, not an attacker who already has the user's file access.
    def _entry_path(self, key):
        return os.path.join(cache_dir(), "programs", f"{key}.bin")

    def _entry_header(self, source, options, key, binary) -> dict:
        return {"format": "many-as-one/program", "v": 2, "key": key, "device": self.identity,
                "pyopencl": cl.VERSION_TEXT, "options": options,
                "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
                "binary_sha256": hashlib.sha256(binary).hexdigest(), "binary_size": len(binary)}

    def _load_cached(self, spec, options, key):
        path = self._entry_path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._reject(path, f"unreadable ({exc})")
            return None
        head, _, binary = data.partition(b"\n")
        try:
            header = json.loads(head)
            expected = self._entry_header(spec.source, options, key, binary)
            bad = [k for k in ("format", "v", "key", "device", "pyopencl", "options", "source_sha256")
                   if header.get(k) != expected[k]]
            if not bad and (header.get("binary_size") != len(binary) or header.get("binary_sha256") != expected["binary_sha256"]):
                bad = ["binary (truncated or replaced)"]
        except (ValueError, AttributeError, UnicodeDecodeError):
            bad = ["header"]
        if bad:
            self._reject(path, "does not match " + ", ".join(bad))
            return None
        try:
            return self._from_binary(binary, options)
        except Exception as exc:  # a binary this driver will not take after all: rebuild from source
            self._reject(path, f"not loadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            return None

    def _from_binary(self, binary, options):
        # pyopencl's low-level program where it has one: its Python wrapper probes a kernel
        # named '_source' on binary programs, which Oclgrind's API check reports as an error
        low = getattr(getattr(cl, "_cl", None), "_Program", None)
        if low is None:
            return cl.Program(self.context, [self.cl_device], [binary]).build(options)
        program = low(self.context, [self.cl_device], [binary])
        program.build(options.encode(), [self.cl_device])
        return program

    def _reject(self, path, why):
        self.stats["rejected"] = self.stats.get("rejected", 0) + 1
        try:
            os.remove(path)
        except OSError:
            pass
        if self.stats["rejected"] == 1:    # once per device and process; stats["rejected"] counts them
            warnings.warn(f"program cache entry {path} {why}; ignored and rebuilt from source (later "
                          f"rejected entries are counted in Device.stats['rejected'], not reported)",
                          CacheEntryWarning, stacklevel=4)

    def _store_binary(self, spec, options, key, binary):
        path = self._entry_path(key)
        try:
            if binary is None:
                return
            header = json.dumps(self._entry_header(spec.source, options, key, binary)).encode()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(header + b"\n" + binary)
            os.replace(tmp, path)
        except Exception as exc:  # the cache is an optimisation; never fail a run over it
            warnings.warn(f"could not store program binary in {path}: {exc}")

    def _build_new(self, spec, options, key, launches=None):
        """Compile a program not in any cache: (program, the spec it was built from, binary).
        ``launches``: what the child launches once (default: ``spec``'s own launch)."""
        bad = self.capabilities().get("bad_programs", {}).get(key)
        if bad:
            raise self._build_error(spec, options, key, f"the OpenCL compiler {bad} on this kernel before "
                                    f"(remembered in {_profile_path()}; delete the entry to try again)")
        if _safe_mode(self) == "off":
            program = self._compile(spec, options, key)
            return program, spec, _binary_of(program)
        from .codegen import GEMM_VECTOR_WIDTHS, with_vector_width
        candidates = [spec]
        if getattr(spec, "template", None) == "gemm" and getattr(spec, "render", None) is not None:
            candidates += [with_vector_width(spec, v) for v in GEMM_VECTOR_WIDTHS if v < spec.render["VW"]]
        failures = []
        for cand in candidates:
            try:
                todo = (_launches_of(cand) if launches is None else launches) if _safe_mode(self) == "launch" else []
                resp = self._worker().request(cand.source, options, todo,
                                              timeout=_env_float("ENGINE_BUILD_TIMEOUT", 300.0))
            except _ChildFailed as f:
                failures.append(f)
                if cand.template == "gemm" and cand.render is not None:
                    self._remember_gemm_failure(cand.render["VW"], f)
                continue
            except _WorkerUnavailable as exc:
                self._no_worker = True      # for the rest of this process
                warnings.warn(f"{exc}; building in this process, unprotected", CompilerFallbackWarning, stacklevel=4)
                program = self._compile(cand, options, key)
                return program, cand, _binary_of(program)
            if not resp["ok"]:      # an ordinary build error (with its log), or built but would not launch
                raise self._build_error(cand, options, key, resp["error"])
            binary = base64.b64decode(resp["binary"])
            try:
                program = self._from_binary(binary, options)
            except Exception:   # a driver whose binaries do not round-trip: the child proved the source safe
                program = self._compile(cand, options, key)
                binary = _binary_of(program)
            return program, cand, binary
        what = failures[-1]
        self._remember(lambda prof: prof.setdefault("bad_programs", {}).__setitem__(key, what.kind))
        raise self._build_error(spec, options, key, f"the OpenCL compiler {what.kind} on every variant of this "
                                f"kernel ({len(candidates)} tried); last: {what.detail}")

    def _remember_gemm_failure(self, vw, failure):
        """A GEMM variant crashed or hung outside the probe: narrow the device's GEMM vectors."""
        from .codegen import GEMM_VECTOR_WIDTHS
        narrower = [v for v in GEMM_VECTOR_WIDTHS if v < vw]
        cap = narrower[0] if narrower else vw

        def update(prof):
            prof["gemm_vector_width"] = min(prof.get("gemm_vector_width", 16), cap)
            prof.setdefault("dropped", []).append({"variant": f"gemm {_vec_name(vw)}", "why": failure.kind,
                                                   "detail": failure.detail[-400:], "found_by": "build"})
        self._remember(update)
        _warn_once(self, f"gemm {_vec_name(vw)}",
                   f"the OpenCL compiler of {self.name} ({self.platform}, driver {self.driver}) {failure.kind} on "
                   f"GEMM kernels with {_vec_name(vw)} vectors ({failure.detail.strip().splitlines()[-1] if failure.detail.strip() else 'no output'}); "
                   f"using {_vec_name(cap)} instead, remembered for this device in {_profile_path()}")

    def _build_error(self, spec, options, key, log):
        src_path = os.path.join(cache_dir(), "failed", f"{spec.name}-{key}.cl")
        try:
            os.makedirs(os.path.dirname(src_path), exist_ok=True)
            with open(src_path, "w") as f:
                f.write(spec.source)
            with open(src_path[:-3] + ".json", "w") as f:
                json.dump({"template": spec.template, "params": spec.params, "options": options}, f, indent=1,
                          default=str)
        except OSError as exc:     # a read-only or full cache disk must not hide the build error itself
            src_path = f"(not saved: {exc})"
        return BuildError(
            f"OpenCL build of kernel {spec.name!r} failed on {self.name} ({self.platform}, driver {self.driver})\n"
            f"template: {spec.template}\nparameters: {json.dumps(spec.params, default=str)}\n"
            f"options: {options}\nsource saved to: {src_path}\nbuild log:\n{log}")

    def _compile(self, spec, options, key):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", cl.CompilerWarning)
                return cl.Program(self.context, spec.source).build(options)
        except cl.RuntimeError as exc:
            raise self._build_error(spec, options, key, str(exc)) from exc

    # --- the build child and the device probe -----------------------------------------------
    def _worker(self) -> "_BuildWorker":
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
                        prof = _probe(self)
                        if not prof.get("transient"):
                            _save_profile(self, prof)
                    self._caps = prof
                    self._tell_codegen(prof)
        return self._caps

    def _remember(self, update):
        prof = dict(self.capabilities())
        update(prof)
        self._caps = prof
        _save_profile(self, prof)
        self._tell_codegen(prof)

    def _tell_codegen(self, prof):
        from .codegen import set_gemm_vector_width
        set_gemm_vector_width(self.kind, prof.get("gemm_vector_width", 16))

    def register_program(self, sources: dict, whole_source: str, binary: bytes | None = None,
                         options: str = "", launches: list | None = None) -> int:
        """Build one program holding many kernels (from ``binary`` when given, in place of
        the source) and serve each kernel from it as if its own source had been built.
        The caller (engine/bundle.py) has checked that the binary belongs to this source,
        options and device."""
        if binary is not None:
            program = self._from_binary(binary, options)
        else:
            spec = _BundledSpec("bundle", whole_source)   # built (and each kernel launched once) in the child
            program, _, _ = self._build_new(spec, options, self._cache_key(whole_source, options), launches or [])
        for name, src in sources.items():
            spec = _BundledSpec(name, src)
            self._programs[self._cache_key(src, options)] = CompiledKernel(spec, cl.Kernel(program, name), self)
        return len(sources)

    def launch(self, ck: CompiledKernel, global_size, local_size, args):
        return ck.kernel(self.queue, tuple(global_size), None if local_size is None else tuple(local_size), *args)


# --- the build child ----------------------------------------------------------------------
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_buildworker.py")
_PROBE_VERSION = 1
_warned: set = set()


class _ChildFailed(Exception):
    """The build child crashed (kind "crashed") or hung (kind "hung") on a request."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class _WorkerUnavailable(RuntimeError):
    pass


def _env_float(name, default):
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def _safe_mode(device) -> str:
    """ENGINE_SAFE_BUILD: off (build in this process), build (child builds), launch (child
    builds and launches once: drivers such as PoCL compile the kernel at its first launch).
    Default: launch on PoCL, build elsewhere."""
    v = (os.environ.get("ENGINE_SAFE_BUILD") or "").strip().lower()
    if v in ("0", "off", "no", "false") or device._no_worker:
        return "off"
    if v in ("build", "launch"):
        return v
    return "launch" if device.is_pocl else "build"


def _binary_of(program):
    try:
        return program.get_info(cl.program_info.BINARIES)[0]
    except Exception:
        return None


def _vec_name(vw):
    return "float" if vw == 1 else f"float{vw}"


def _warn_once(device, what, message):
    if (device.identity, what) in _warned:
        return
    _warned.add((device.identity, what))
    warnings.warn(message, CompilerFallbackWarning, stacklevel=3)


_SCALAR_KINDS = {"float32": "f32", "int32": "i32", "int64": "i64", "bool": "u8"}


def _launches_of(spec) -> list:
    """One launch of ``spec`` with zero-filled buffers of its real sizes (for the child)."""
    if not getattr(spec, "args", None) or not getattr(spec, "global_size", None):
        return []
    args = []
    for a in spec.args:
        if a[0] in ("out", "in"):
            n = a[1]
            args.append(["buf", int(n.numel) * np.dtype(NP_DTYPES[n.dtype]).itemsize, None])
        elif a[0] == "var":
            args.append([_SCALAR_KINDS[a[1].dtype], 0])
        else:                       # seed, offset
            args.append(["u32", 0])
    return [{"name": spec.name, "global": list(spec.global_size),
             "local": None if spec.local_size is None else list(spec.local_size), "args": args, "read": []}]


class _BuildWorker:
    """One child process per device that builds programs (engine/_buildworker.py); a crash
    or hang there is reported as _ChildFailed and the next request starts a new child."""

    def __init__(self, device):
        self.sel = {"index": device.index, "platform": device.platform, "name": device.name}
        self.owner = os.getpid()
        self.requests = 0
        self.proc = None
        self.err = None
        self.lock = threading.Lock()

    def _start(self):
        self.err = tempfile.TemporaryFile()
        env = dict(os.environ)
        if env.get("OCLGRIND_LOG"):      # Oclgrind's reports from the child go beside the parent's
            env["OCLGRIND_LOG"] = env["OCLGRIND_LOG"] + ".child"
        try:
            self.proc = subprocess.Popen([sys.executable, _WORKER_SCRIPT, json.dumps(self.sel)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env)
        except OSError as exc:
            raise _WorkerUnavailable(f"cannot start the build child ({exc})") from exc
        try:
            ready = json.loads(self._read(_env_float("ENGINE_BUILD_START_TIMEOUT", 120.0)))
        except (_ChildFailed, ValueError) as exc:
            self.close()
            raise _WorkerUnavailable(f"the build child did not start ({exc})") from exc
        if not ready.get("ready"):
            self.close()
            raise _WorkerUnavailable(f"the build child did not start: {ready}")

    def _tail(self):
        try:
            self.err.seek(0, os.SEEK_END)
            size = self.err.tell()
            self.err.seek(max(0, size - 4000))
            return self.err.read().decode(errors="replace").strip()
        except Exception:
            return ""

    def _read(self, timeout) -> str:
        fd = self.proc.stdout.fileno()
        chunks, deadline = [], time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.proc.kill()
                self.proc.wait()
                tail = self._tail()
                self.close()
                raise _ChildFailed("hung", f"no answer in {timeout:g} s (ENGINE_BUILD_TIMEOUT)" +
                                   (f"; its output: {tail}" if tail else ""))
            data = os.read(fd, 1 << 20)
            if not data:
                rc = self.proc.wait()
                how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
                tail = self._tail()
                self.close()
                raise _ChildFailed("crashed", f"{how}" + (f": {tail}" if tail else ""))
            chunks.append(data)
            if data.endswith(b"\n"):
                return b"".join(chunks).decode()

    def request(self, source, options, launches, timeout, binary=None) -> dict:
        with self.lock:
            self.requests += 1
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            msg = {"source": source, "options": options, "launches": launches,
                   "binary": base64.b64encode(binary).decode() if binary else None}
            try:
                self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass        # it died: _read reports how
            answer = json.loads(self._read(timeout))
            self._close_when_idle()
            return answer

    def _close_when_idle(self):
        """Builds come in bursts (a new model's first step); the child (a few hundred MB with
        its OpenCL context) goes away once none came for ENGINE_BUILD_CHILD_IDLE seconds."""
        seen = self.requests

        def close_if_idle():
            with self.lock:
                if self.requests == seen:
                    self.close()
        timer = threading.Timer(_env_float("ENGINE_BUILD_CHILD_IDLE", 30.0), close_if_idle)
        timer.daemon = True
        timer.start()

    def close(self):
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=2)
            except Exception:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except Exception:
                    pass
        if self.err is not None:
            self.err.close()
            self.err = None


def _close_workers():
    for d in _devices or ():
        if d._build_worker is not None and d._build_worker.owner == os.getpid():
            d._build_worker.close()


atexit.register(_close_workers)


# --- device probe -------------------------------------------------------------------------
def _profile_path() -> str:
    return os.path.join(cache_dir(), "devices.json")


_template_digest = None


def _profile_key(device) -> str:
    """Device, driver, pyopencl, probe version and the templates' text: a change to any re-probes."""
    global _template_digest
    if _template_digest is None:
        import kernels
        h = hashlib.sha256()
        for name in sorted(os.listdir(kernels.TEMPLATE_DIR)):
            if name.endswith(".mako"):
                with open(os.path.join(kernels.TEMPLATE_DIR, name), "rb") as f:
                    h.update(name.encode() + f.read())
        _template_digest = h.hexdigest()[:12]
    return f"{device.identity}|pyopencl {cl.VERSION_TEXT}|probe {_PROBE_VERSION}|templates {_template_digest}"


def _load_profiles() -> dict:
    try:
        with open(_profile_path()) as f:
            db = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"{_profile_path()} is unreadable ({exc}); devices are probed again")
        return {}
    if not isinstance(db, dict) or not all(isinstance(v, dict) for v in db.values()):
        warnings.warn(f"{_profile_path()} is not a mapping of device profiles; devices are probed again")
        return {}
    return db


def _save_profile(device, prof):
    path = _profile_path()
    try:
        db = _load_profiles()
        db[_profile_key(device)] = prof
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(db, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not store the device probe in {path}: {exc}")


def _probe_args(arrays, out_index=0):
    """Launch arguments: buffers holding ``arrays`` (float32), the first one read back."""
    args = [["buf", a.nbytes, base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode()]
            for a in arrays]
    return args, [out_index]


def _probe_kernels(kind: str, variant) -> list:
    """Probe kernels from our own templates: [(source, launches, check)]; ``kind`` is
    basic | gemm (variant = vector width) | tiled (variant = tile size)."""
    import kernels
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.uniform(-1, 1, size=shape).astype(np.float32)
    out = []
    if kind == "basic":
        x = f32(64)
        src = kernels.render("elementwise", name="mao_probe_ew", numel=64,
                             args=[("buf", "out0", "float32", False), ("buf", "in0", "float32", True)], index=[],
                             body=[("t0", "LOAD", ("in0", "gid"), "float32"), ("t1", "EXP", ("t0",), "float32")],
                             stores=[("out0", "t1")])
        args, read = _probe_args([np.zeros(64, np.float32), x])
        out.append((src, {"name": "mao_probe_ew", "global": [64], "local": None, "args": args, "read": read},
                    lambda o: (o[:64], np.exp(x))))
        y = f32(4, 16)
        src = kernels.render("reduce", name="mao_probe_red", numel=4,
                             args=[("buf", "out0", "float32", False), ("buf", "in0", "float32", True)], index=[],
                             loop_extent=16, loop_index=[],
                             body=[("t0", "IMUL", ("gid", 16), "int32"), ("t1", "IADD", ("t0", "r"), "int32"),
                                   ("t2", "LOAD", ("in0", "t1"), "float32")],
                             value="t2", combine="SUM", acc_name="acc_v", epilogue=[], stores=[("out0", "acc_v")])
        args, read = _probe_args([np.zeros(4, np.float32), y])
        out.append((src, {"name": "mao_probe_red", "global": [16], "local": None, "args": args, "read": read},
                    lambda o: (o[:4], y.sum(1))))
        return out
    decl = [("buf", "out0", "float32", False), ("buf", "in0", "float32", True), ("buf", "in1", "float32", True),
            ("buf", "in2", "float32", True)]
    epilogue = [("e0", "LOAD", ("in2", "e_n"), "float32"), ("e1", "ADD", ("e_acc", "e0"), "float32"),
                ("e2", "RELU", ("e1",), "float32")]
    if kind == "gemm":          # relu(A @ B + bias), M 32 x N 30 (W 32) x K 16, R 8: 4 work-items, local size 4
        vw, M, N, K, R, W = variant, 32, 30, 16, 8, 32
        A, B, bias = f32(M, K), f32(K, N), f32(N)
        panel = np.zeros((1, K, W), np.float32)
        panel[0, :, :N] = B
        a_panels = A.reshape(M // R, R, K).transpose(0, 2, 1)
        ref = np.maximum(A @ B + bias, 0)
        for packed in (False,):        # the CPU path streams A in place (implicit GEMM)
            name = f"mao_probe_gemm_{'packed' if packed else 'implicit'}"
            a_rows = [] if packed else [[(f"s{r}_0", "IMUL", (f"am{r}", K), "int32"),
                                         (f"s{r}_1", "IADD", (f"s{r}_0", "k"), "int32"),
                                         (f"s{r}_2", "LOAD", ("in1", f"s{r}_1"), "float32"),
                                         (f"a{r}", "CAST", (f"s{r}_2",), "float32")] for r in range(R)]
            src = kernels.render("gemm", name=name, M=M, N=N, K=K, R=R, VW=vw, NV=W // vw, Mb=M // R, Nb=1,
                                 args=decl, a_packed=packed, a_name="in1", a_rows=a_rows, b_name="in0",
                                 out_name="out0", batch_index=[], epilogue=epilogue, value="e2")
            args, read = _probe_args([np.zeros(M * N, np.float32), panel, a_panels if packed else A, bias])
            out.append((src, {"name": name, "global": [M // R, 1, 1], "local": [4, 1, 1], "args": args,
                              "read": read}, lambda o: (o[:M * N], ref.ravel())))
        return out
    # tiled: one TM x TN work-group tile of relu(A @ B + bias), with N and K not whole tiles
    t = variant
    M, N, K = t, t - 5, 20
    A, B, bias = f32(M, K), f32(K, N), f32(N)
    panel = np.zeros((1, K, t), np.float32)
    panel[0, :, :N] = B
    a_panel = A.T.reshape(1, K, t)
    src = kernels.render("gemm_tiled", name="mao_probe_tiled", M=M, N=N, K=K, TM=t, TN=t, KB=16, Mb=1, Nb=1,
                         args=decl, a_packed=True, a_name="in1", a_load=[], b_name="in0", out_name="out0",
                         batch_index=[], epilogue=epilogue, value="e2")
    args, read = _probe_args([np.zeros(M * N, np.float32), panel, a_panel, bias])
    ref = np.maximum(A @ B + bias, 0)
    return [(src, {"name": "mao_probe_tiled", "global": [16, 16, 1], "local": [16, 16, 1], "args": args,
                   "read": read}, lambda o: (o[:M * N], ref.ravel()))]


def _probe_try(device, probes, timeout) -> tuple | None:
    """Build the probe kernels as one program and run each; None, or (kind, detail) of the failure."""
    source = "\n".join(p[0] for p in probes)
    try:
        resp = device._worker().request(source, device._extra_options, [p[1] for p in probes], timeout=timeout)
    except _ChildFailed as f:
        return f.kind, f.detail
    if not resp["ok"]:
        return "failed", resp["error"]
    for i, (_, launch, check) in enumerate(probes):
        got, want = check(np.frombuffer(base64.b64decode(resp["outputs"][f"{i}:0"]), np.float32))
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            return "computed wrong results", f"{launch['name']}: max error {np.abs(got - want).max():.3g}"
    return None


def _probe(device) -> dict:
    """Probe in the build child what the device's compiler builds and runs (see capabilities)."""
    from .codegen import GEMM_VECTOR_WIDTHS
    t0 = time.perf_counter()
    mode = _safe_mode(device)
    prof = {"device": device.identity, "kind": device.kind, "safe_build": mode, "dropped": [], "works": [],
            "gemm_vector_width": 16, "tiled_max": 128}
    if mode == "off" or os.environ.get("ENGINE_PROBE", "1").strip().lower() in ("0", "off", "no"):
        prof["probe"] = "skipped (ENGINE_SAFE_BUILD=off or ENGINE_PROBE=0)"
        return prof
    timeout = _env_float("ENGINE_PROBE_TIMEOUT", 120.0)
    if device.kind in ("gpu", "accelerator"):   # these use the local-memory tiled GEMM
        family, chain, field = "tiled", [128, 64, 32, 16], "tiled_max"
        label = lambda v: f"tiled gemm {v}x{v} (local memory)"
    else:                                       # the register-blocked GEMM with float vectors
        family, chain, field = "gemm", list(GEMM_VECTOR_WIDTHS), "gemm_vector_width"
        label = lambda v: f"gemm {_vec_name(v)}"
        prof["local_memory"] = "not probed (no kernel uses it on this kind of device)"
    basic = _probe_kernels("basic", None)
    try:
        failure = _probe_try(device, basic + _probe_kernels(family, chain[0]), timeout)   # usually all at once
        if failure is None:
            prof["works"] += ["elementwise", "reduce", label(chain[0])]
            prof[field] = chain[0]
        else:                                   # find which kernel it was, one by one
            bf = _probe_try(device, basic, timeout)
            if bf is None:
                prof["works"] += ["elementwise", "reduce"]
            else:
                prof["dropped"].append({"variant": "elementwise+reduce", "why": bf[0], "detail": bf[1][-400:]})
            for i, v in enumerate(chain):
                f = failure if (i == 0 and bf is None) else _probe_try(device, _probe_kernels(family, v), timeout)
                if f is None:
                    prof["works"].append(label(v))
                    prof[field] = v
                    break
                prof["dropped"].append({"variant": label(v), "why": f[0], "detail": f[1][-400:], "found_by": "probe"})
            else:
                prof[field] = chain[-1]
        if family == "tiled":
            prof["local_memory"] = any(w.startswith("tiled") for w in prof["works"])
    except _WorkerUnavailable as exc:   # not remembered on disk: the next process tries again
        device._no_worker = True
        warnings.warn(f"{exc}; the device probe did not run and programs are built in this process, "
                      f"unprotected from compiler crashes", CompilerFallbackWarning, stacklevel=4)
        prof["probe"] = f"not run: {exc}"
        prof["safe_build"] = "off"
        prof["transient"] = True
    prof["probe_s"] = round(time.perf_counter() - t0, 3)
    for d in prof["dropped"]:
        last = d["detail"].strip().splitlines()[-1] if d["detail"].strip() else "no output"
        instead = (f"using {label(prof[field])} instead" if d["variant"] != "elementwise+reduce"
                   else "kernels of these kinds will fail to build on it")
        _warn_once(device, d["variant"],
                   f"the OpenCL compiler of {device.name} ({device.platform}, driver {device.driver}) {d['why']} on "
                   f"{d['variant']} kernels ({last}); {instead} "
                   f"(found by the device probe, remembered in {_profile_path()})")
    return prof


_devices: list[Device] | None = None
_default: Device | None = None


def devices() -> list[Device]:
    """Every OpenCL device of every platform, in a stable order."""
    global _devices
    if _devices is None:
        found = []
        try:
            platforms = cl.get_platforms()
        except cl.Error:
            platforms = []
        for p in platforms:
            try:
                found.extend(p.get_devices())
            except cl.Error:
                continue
        _devices = [Device(d, i) for i, d in enumerate(found)]
    return _devices


def _device_lines(devs) -> str:
    return "\n".join(f"  [{d.index}] {d.platform} / {d.name}  kind={d.kind}  driver={d.driver}  vendor={d.vendor}"
                     f"  (aliases: {', '.join(d.aliases())})" for d in devs)


def _pick(selector: str, source: str = "ENGINE_DEVICE") -> Device:
    """The device ``selector`` names: an index, an alias (pocl, nvidia, amd, intel, oclgrind,
    cpu, gpu) or, case-insensitively, any part of the device's line in ``engine devices``
    (platform, name, vendor, driver; several words must all appear). The first match wins.
    ``source`` says where the selector came from (the variable, or a device argument)."""
    devs = devices()
    if not devs:
        raise DeviceNotFound("no OpenCL device found: install pocl-binary-distribution or a GPU driver's OpenCL ICD")
    sel = str(selector).strip().lower()
    what = f"{source}={selector!r}" if source == "ENGINE_DEVICE" else f"{source} {selector!r}"
    choose = (f"Set ENGINE_DEVICE (or pass device=) to a device's index, one of the aliases "
              f"{', '.join(DEVICE_ALIASES)}, or any part of its line (case-insensitive); `engine devices` lists them.")
    if sel.isdigit():
        i = int(sel)
        if i >= len(devs):
            raise DeviceNotFound(f"{what}: device index {i} out of range; {len(devs)} found:\n{_device_lines(devs)}\n{choose}")
        return devs[i]
    if sel:
        for d in devs:
            if sel in d.aliases():
                return d
        for d in devs:
            text = d.selector_text()
            if sel in text or all(w in text for w in sel.split()):
                return d
    raise DeviceNotFound(f"{what} matches no OpenCL device; found:\n{_device_lines(devs)}\n{choose}")


def default_device() -> Device:
    """ENGINE_DEVICE (see _pick), else a GPU, else the PoCL CPU, else the first."""
    global _default
    if _default is None:
        sel = os.environ.get("ENGINE_DEVICE")
        if sel:
            _default = _pick(sel)
        else:
            devs = devices()
            if not devs:
                _pick("")
            _default = (next((d for d in devs if d.kind == "gpu"), None)
                        or next((d for d in devs if d.is_pocl), None) or devs[0])
    return _default


def set_default_device(device) -> Device:
    global _default
    _default = device if isinstance(device, Device) else _pick(str(device), "device")
    return _default


def get_device(device) -> Device:
    if device is None:
        return default_device()
    if isinstance(device, Device):
        return device
    return _pick(str(device), "device")
