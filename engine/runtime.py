"""The OpenCL runtime: devices, buffers (pooled), programs (cached in memory and on disk),
launches and profiling events. This is the only module that imports pyopencl.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings

import numpy as np
import pyopencl as cl

__all__ = ["Device", "Buffer", "BuildError", "DeviceNotFound", "devices", "default_device",
           "set_default_device", "cache_dir", "NP_DTYPES", "CompiledKernel"]

NP_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "bool": np.uint8}
_KINDS = {cl.device_type.GPU: "gpu", cl.device_type.CPU: "cpu", cl.device_type.ACCELERATOR: "accelerator"}


class BuildError(RuntimeError):
    """A kernel failed to compile: carries the build log, template, parameters and source path."""


class DeviceNotFound(LookupError):
    pass


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
        self.kind = _KINDS.get(cl_device.type & ~cl.device_type.DEFAULT, "other")
        self.is_pocl = "portable computing language" in self.platform.lower() or "pocl" in self.platform.lower()
        self._ctx = None
        self._queue = None
        self._pool: dict[int, list] = {}
        self._programs: dict[str, CompiledKernel] = {}
        self._lock = threading.Lock()
        self.stats = {"builds": 0, "disk_hits": 0, "memory_hits": 0, "build_s": 0.0}

    def __repr__(self):
        return f"Device({self.index}: {self.platform} / {self.name}, {self.kind}, driver {self.driver})"

    def describe(self) -> dict:
        d = self.cl_device
        return {"index": self.index, "platform": self.platform, "name": self.name, "kind": self.kind,
                "driver": self.driver, "compute_units": d.max_compute_units,
                "global_mem_mb": d.global_mem_size // 2**20, "max_work_group_size": d.max_work_group_size,
                "opencl": d.version.strip()}

    @property
    def context(self):
        if self._ctx is None:
            self._ctx = cl.Context([self.cl_device])
            self._queue = cl.CommandQueue(self._ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
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
    def _cache_key(self, source: str, options: str) -> str:
        ident = "\0".join([self.platform, self.name, self.driver, cl.VERSION_TEXT, options, source])
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    def build(self, spec, options: str = "") -> CompiledKernel:
        """Build ``spec`` (a codegen.KernelSpec); memory cache, then disk cache, then compile."""
        key = self._cache_key(spec.source, options)
        hit = self._programs.get(key)
        if hit is not None:
            self.stats["memory_hits"] += 1
            return hit
        t0 = time.perf_counter()
        path = os.path.join(cache_dir(), "programs", f"{key}.bin")
        program = None
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    program = cl.Program(self.context, [self.cl_device], [f.read()]).build(options)
                self.stats["disk_hits"] += 1
            except Exception:  # a stale or foreign binary: rebuild from source
                program = None
        if program is None:
            program = self._compile(spec, options, key)
            self._store_binary(program, path)
            self.stats["builds"] += 1
        self.stats["build_s"] += time.perf_counter() - t0
        ck = CompiledKernel(spec, getattr(program, spec.name), self)
        self._programs[key] = ck
        return ck

    def _compile(self, spec, options, key):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", cl.CompilerWarning)
                return cl.Program(self.context, spec.source).build(options)
        except cl.RuntimeError as exc:
            failed = os.path.join(cache_dir(), "failed")
            os.makedirs(failed, exist_ok=True)
            src_path = os.path.join(failed, f"{spec.name}-{key}.cl")
            with open(src_path, "w") as f:
                f.write(spec.source)
            with open(src_path[:-3] + ".json", "w") as f:
                json.dump({"template": spec.template, "params": spec.params, "options": options}, f, indent=1, default=str)
            raise BuildError(
                f"OpenCL build of kernel {spec.name!r} failed on {self.name} ({self.platform}, driver {self.driver})\n"
                f"template: {spec.template}\nparameters: {json.dumps(spec.params, default=str)}\n"
                f"options: {options}\nsource saved to: {src_path}\nbuild log:\n{exc}") from exc

    @staticmethod
    def _store_binary(program, path):
        try:
            binary = program.get_info(cl.program_info.BINARIES)[0]
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(binary)
            os.replace(tmp, path)
        except Exception as exc:  # the cache is an optimisation; never fail a run over it
            warnings.warn(f"could not store program binary in {path}: {exc}")

    def register_program(self, sources: dict, whole_source: str, binary: bytes | None = None,
                         options: str = "") -> int:
        """Build one program holding many kernels (from ``binary`` when given, in place of
        the source) and serve each kernel from it as if its own source had been built."""
        if binary is not None:
            program = cl.Program(self.context, [self.cl_device], [binary]).build(options)
        else:
            program = cl.Program(self.context, whole_source).build(options)
        for name, src in sources.items():
            spec = _BundledSpec(name, src)
            self._programs[self._cache_key(src, options)] = CompiledKernel(spec, getattr(program, name), self)
        return len(sources)

    def launch(self, ck: CompiledKernel, global_size, local_size, args):
        return ck.kernel(self.queue, tuple(global_size), None if local_size is None else tuple(local_size), *args)


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


def _pick(selector: str) -> Device:
    devs = devices()
    if not devs:
        raise DeviceNotFound("no OpenCL device found: install pocl-binary-distribution or a GPU driver's OpenCL ICD")
    if selector.strip().isdigit():
        i = int(selector)
        if i >= len(devs):
            raise DeviceNotFound(f"device index {i} out of range; found {len(devs)}: {devs}")
        return devs[i]
    for d in devs:
        if selector.lower() in f"{d.platform} {d.name}".lower():
            return d
    raise DeviceNotFound(f"no OpenCL device matches {selector!r}; found: " +
                         "; ".join(f"{d.index}: {d.platform} / {d.name}" for d in devs))


def default_device() -> Device:
    """ENGINE_DEVICE (index or name substring), else a GPU, else the PoCL CPU, else the first."""
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
    _default = device if isinstance(device, Device) else _pick(str(device))
    return _default


def get_device(device) -> Device:
    if device is None:
        return default_device()
    if isinstance(device, Device):
        return device
    return _pick(str(device))
