"""The build child: one process per device that builds (and, where drivers compile at first
launch, launches once) each new program, so a compiler that crashes or hangs takes down
the child, not the user's process (engine/_buildworker.py is the child's side)."""
from __future__ import annotations

import atexit
import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from functools import lru_cache

import pyopencl as cl

import kernels


_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_buildworker.py")


class CompilerFallbackWarning(RuntimeWarning):
    """The device's OpenCL compiler crashed or hung on a kernel variant; a safer one is used."""



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


def _source_proven(device) -> bool:
    """Whether a program the build child built and launched is rebuilt here from its source
    instead of shipped as a binary: on drivers that compile at first launch (PoCL) and keep
    their own kernel cache, which the child has just filled, so the rebuild here compiles
    nothing, while asking for the binary would compile every kernel once more (see
    _buildworker.py). POCL_KERNEL_CACHE=0 turns PoCL's cache off, and binaries back on."""
    return (_safe_mode(device) == "launch" and device.is_pocl
            and os.environ.get("POCL_KERNEL_CACHE", "1").strip() != "0")


# the include guard of Clang's opencl-c.h, which PoCL includes in every program it builds
_LEAN_OPTION = "-D_OPENCL_H_"


@lru_cache(maxsize=None)
def _prelude() -> str:
    return kernels.render("pocl_builtins")


def _lean(device) -> dict | None:
    """How PoCL builds a source without parsing Clang's opencl-c.h (980 KB, ~0.1 CPU-s on every
    clBuildProgram: more than compiling a group of our kernels): its include guard defined,
    the builtins our templates call declared as the header declares them
    (kernels/pocl_builtins.cl.mako). Same LLVM IR, kernel by kernel (bench/NOTES.md). A build
    tries that first and, where it fails (a source calling a builtin the prelude lacks),
    builds with the whole header: the child and this process alike (_lean_build,
    _buildworker.py), so both build the same program and PoCL's kernel cache, which the
    child fills, serves this process. None (whole header always) off PoCL or with
    ENGINE_POCL_LEAN=0."""
    if not device.is_pocl or os.environ.get("ENGINE_POCL_LEAN", "1").strip() == "0":
        return None
    return {"prelude": _prelude(), "option": _LEAN_OPTION}


def _lean_build(lean, build, source, options):
    """``build(source, options)`` of ``source`` the lean way (see _lean) if that builds, else as is."""
    if lean:
        try:
            return build(lean["prelude"] + source, f"{options} {lean['option']}".strip())
        except Exception:
            pass
    return build(source, options)


def _binary_of(program):
    try:
        return program.get_info(cl.program_info.BINARIES)[0]
    except Exception:
        return None


def _vec_name(vw):
    return "float" if vw == 1 else f"float{vw}"



_warned: set = set()     # (device identity, variant) warned about in this process


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
            args.append(["buf", n.nbytes, None])
        elif a[0] == "var":
            args.append([_SCALAR_KINDS[a[1].dtype], 0])
        else:                       # seed, offset
            args.append(["u32", 0])
    return [{"name": spec.name, "global": list(spec.global_size),
             "local": None if spec.local_size is None else list(spec.local_size), "args": args, "read": []}]


def _opencl_loader() -> str | None:
    """The OpenCL library (ICD loader) this process uses (pyopencl's own, in a wheel), for the
    build child to load through ctypes, so both list the same platforms in the same order."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "libOpenCL" in os.path.basename(path) and os.path.exists(path):
                    return path
    except OSError:
        pass
    return None


class _BuildWorker:
    """One child process per device that builds programs (engine/_buildworker.py); a crash
    or hang there is reported as _ChildFailed and the next request starts a new child."""

    def __init__(self, device):
        self.sel = {"index": device.index, "platform": device.platform, "name": device.name, "lib": _opencl_loader(),
                    "lean": _lean(device)}
        self.owner = os.getpid()
        self.requests = 0
        self.proc = None
        self.err = None
        self.lock = threading.Lock()
        _workers.add(self)

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

    def start(self) -> int:
        """Start the child now if it is not running; the number of requests made so far."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            return self.requests

    def request(self, source, options, launches, timeout, binary=None, want_binary=True) -> dict:
        with self.lock:
            self.requests += 1
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            msg = {"source": source, "options": options, "launches": launches, "want_binary": want_binary,
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




# the build children of this process, closed when it exits (a forked child's copies are not ours)
_workers: weakref.WeakSet = weakref.WeakSet()


def _close_workers():
    for w in list(_workers):
        if w.owner == os.getpid():
            w.close()


atexit.register(_close_workers)
