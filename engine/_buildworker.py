"""The child process that builds (and, where the driver compiles at first launch, launches)
new OpenCL programs for the runtime (engine/build_child.py starts it), so that a driver's
compiler that aborts, segfaults or hangs takes down this process, never the user's.

Run as a script (``python _buildworker.py DEVICE-JSON``). It calls the OpenCL library
through ctypes and imports neither the engine, nor pyopencl, nor numpy: a cold start pays
this process's start once per build child, and those imports were most of it (~0.3 CPU-s
against ~0.03). DEVICE-JSON names the device (index in the parent's order, checked by
platform and name) and the OpenCL loader the parent uses (``lib``), so both see the same
platforms; ``lean`` (or null), how to build a source without PoCL's parse of
opencl-c.h (build_child._lean): tried first, the source as given where that fails. It
prints one ``ready`` line, then answers one JSON request per line on stdin
with one JSON line on stdout:

  {"source" | "binary" (base64), "options",
   "launches": [{"name", "global": [...], "local": [...] | null,
                 "args": [["buf", nbytes, base64 data | null], ["u32" | "i32" | "f32", value]],
                 "read": [arg index, ...]}, ...],
   "want_binary": true | false (default true)}
  -> {"ok": true, "binary": base64 | null, "outputs": {"launch:arg": base64}}
   | {"ok": false, "error": build log or launch error}   (an ordinary failure, not a crash)

The options reach clBuildProgram exactly as given (plus lean's): the parent builds the same
source with the same options, the lean way first too (engine/program_cache.py), so PoCL's
kernel cache, filled here, serves it.

Asking PoCL for a program's binary compiles a generic work-group function for every kernel
in it (about as long as the kernel's first launch again), so a parent that needs no binary
says ``"want_binary": false``.

ENGINE_BUILD_FAULT is a test hook (used by tests/test_probe.py only): comma-separated
``action:needle`` rules; when a request's source contains ``needle`` (every part of it, if
``&`` joins several) the worker does
``action`` (abort | segv | hang | exit) where the driver would compile it, as a crashing
or hanging OpenCL compiler would.
"""
import base64
import ctypes
import ctypes.util
import json
import os
import struct
import sys
import time

_c = ctypes
_ptr, _int, _uint, _size = _c.c_void_p, _c.c_int32, _c.c_uint32, _c.c_size_t

_DEVICE_TYPE_ALL = 0xFFFFFFFF
_PLATFORM_NAME, _DEVICE_NAME = 0x0902, 0x102B
_PROGRAM_BUILD_LOG, _PROGRAM_BINARY_SIZES, _PROGRAM_BINARIES = 0x1183, 0x1165, 0x1166
_MEM_READ_WRITE, _MEM_COPY_HOST_PTR = 1 << 0, 1 << 5
_ERRORS = {-1: "DEVICE_NOT_FOUND", -4: "MEM_OBJECT_ALLOCATION_FAILURE", -5: "OUT_OF_RESOURCES",
           -6: "OUT_OF_HOST_MEMORY", -11: "BUILD_PROGRAM_FAILURE", -30: "INVALID_VALUE",
           -33: "INVALID_DEVICE", -38: "INVALID_MEM_OBJECT", -42: "INVALID_BINARY",
           -44: "INVALID_PROGRAM", -45: "INVALID_PROGRAM_EXECUTABLE", -46: "INVALID_KERNEL_NAME",
           -48: "INVALID_KERNEL", -49: "INVALID_ARG_INDEX", -50: "INVALID_ARG_VALUE",
           -51: "INVALID_ARG_SIZE", -52: "INVALID_KERNEL_ARGS", -53: "INVALID_WORK_DIMENSION",
           -54: "INVALID_WORK_GROUP_SIZE", -55: "INVALID_WORK_ITEM_SIZE", -63: "INVALID_GLOBAL_WORK_SIZE"}
_SCALARS = {"u32": "<I", "i32": "<i", "i64": "<q", "u8": "<B", "f32": "<f"}


class CLError(Exception):
    pass


def _fault(source: str):
    rules = os.environ.get("ENGINE_BUILD_FAULT", "")
    for rule in filter(None, (r.strip() for r in rules.split(","))):
        action, _, needle = rule.partition(":")
        if needle and all(part in source for part in needle.split("&")):
            sys.stderr.write(f"ENGINE_BUILD_FAULT: injected {action} (source contains {needle!r})\n")
            sys.stderr.flush()
            if action == "abort":
                os.abort()
            if action == "segv":
                ctypes.string_at(0)
            if action == "hang":
                while True:
                    time.sleep(3600)
            if action == "exit":
                os._exit(3)


def _preload_shipped_drivers(lib):
    """The drivers a wheel ships beside its loader (pyopencl's: PoCL, named in .icd files
    next to it by a bare file name, which the loader then dlopens): load them first from that
    folder, so the loader's dlopen finds them loaded, as it does in the parent. Local, not
    global: exported, a shipped PoCL's symbols would bind another PoCL that the loader also
    lists (Debian's, through OCL_ICD_VENDORS), and that one crashed at its first call."""
    folder = os.path.dirname(lib)
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".icd")] if folder else []
    except OSError:
        return
    for name in names:
        try:
            with open(os.path.join(folder, name)) as f:
                driver = f.read().strip()
            if driver and not os.path.isabs(driver) and os.path.exists(os.path.join(folder, driver)):
                ctypes.CDLL(os.path.join(folder, driver), mode=ctypes.RTLD_LOCAL)
        except OSError:
            continue


class OpenCL:
    """The few OpenCL calls a build child makes, on one device."""

    def __init__(self, sel):
        lib = sel.get("lib") or ctypes.util.find_library("OpenCL") or "libOpenCL.so.1"
        _preload_shipped_drivers(lib)
        cl = self.cl = _c.CDLL(lib)
        for name, res, args in (
                ("clGetPlatformIDs", _int, [_uint, _ptr, _c.POINTER(_uint)]),
                ("clGetPlatformInfo", _int, [_ptr, _uint, _size, _ptr, _c.POINTER(_size)]),
                ("clGetDeviceIDs", _int, [_ptr, _c.c_uint64, _uint, _ptr, _c.POINTER(_uint)]),
                ("clGetDeviceInfo", _int, [_ptr, _uint, _size, _ptr, _c.POINTER(_size)]),
                ("clCreateContext", _ptr, [_ptr, _uint, _c.POINTER(_ptr), _ptr, _ptr, _c.POINTER(_int)]),
                ("clCreateCommandQueue", _ptr, [_ptr, _ptr, _c.c_uint64, _c.POINTER(_int)]),
                ("clCreateProgramWithSource", _ptr, [_ptr, _uint, _c.POINTER(_c.c_char_p), _c.POINTER(_size),
                                                     _c.POINTER(_int)]),
                ("clCreateProgramWithBinary", _ptr, [_ptr, _uint, _c.POINTER(_ptr), _c.POINTER(_size),
                                                     _c.POINTER(_c.c_char_p), _c.POINTER(_int), _c.POINTER(_int)]),
                ("clBuildProgram", _int, [_ptr, _uint, _c.POINTER(_ptr), _c.c_char_p, _ptr, _ptr]),
                ("clGetProgramBuildInfo", _int, [_ptr, _ptr, _uint, _size, _ptr, _c.POINTER(_size)]),
                ("clGetProgramInfo", _int, [_ptr, _uint, _size, _ptr, _c.POINTER(_size)]),
                ("clCreateKernel", _ptr, [_ptr, _c.c_char_p, _c.POINTER(_int)]),
                ("clSetKernelArg", _int, [_ptr, _uint, _size, _ptr]),
                ("clCreateBuffer", _ptr, [_ptr, _c.c_uint64, _size, _ptr, _c.POINTER(_int)]),
                ("clEnqueueNDRangeKernel", _int, [_ptr, _ptr, _uint, _ptr, _c.POINTER(_size), _c.POINTER(_size),
                                                  _uint, _ptr, _ptr]),
                ("clEnqueueReadBuffer", _int, [_ptr, _ptr, _uint, _size, _size, _ptr, _uint, _ptr, _ptr]),
                ("clFinish", _int, [_ptr]),
                ("clReleaseMemObject", _int, [_ptr]),
                ("clReleaseKernel", _int, [_ptr]),
                ("clReleaseProgram", _int, [_ptr])):
            fn = getattr(cl, name)
            fn.restype, fn.argtypes = res, args
        self.device, self.name = self._device(sel), sel["name"]
        err = _int(0)
        self.ctx = cl.clCreateContext(None, 1, _c.byref(_ptr(self.device)), None, None, _c.byref(err))
        self._check("clCreateContext", err.value)
        self.queue = cl.clCreateCommandQueue(self.ctx, self.device, 0, _c.byref(err))
        self._check("clCreateCommandQueue", err.value)

    @staticmethod
    def _check(what, code):
        if code != 0:
            raise CLError(f"{what} failed: {_ERRORS.get(code, 'error')} ({code})")

    def _text(self, getter, handle, param):
        size = _size(0)
        self._check("info", getter(handle, param, 0, None, _c.byref(size)))
        buf = _c.create_string_buffer(size.value)
        self._check("info", getter(handle, param, size.value, buf, None))
        return buf.value.decode(errors="replace").strip()

    def _device(self, sel):
        """The device the parent names: same loader, same enumeration order as pyopencl's."""
        cl, n = self.cl, _uint(0)
        self._check("clGetPlatformIDs", cl.clGetPlatformIDs(0, None, _c.byref(n)))
        platforms = (_ptr * n.value)()
        self._check("clGetPlatformIDs", cl.clGetPlatformIDs(n.value, platforms, None))
        found = []
        for p in platforms:
            if cl.clGetDeviceIDs(p, _DEVICE_TYPE_ALL, 0, None, _c.byref(n)) != 0 or not n.value:
                continue
            devs = (_ptr * n.value)()
            if cl.clGetDeviceIDs(p, _DEVICE_TYPE_ALL, n.value, devs, None) == 0:
                found.extend((p, d) for d in devs)
        p, d = found[sel["index"]]
        platform, name = self._text(cl.clGetPlatformInfo, p, _PLATFORM_NAME), self._text(cl.clGetDeviceInfo, d,
                                                                                           _DEVICE_NAME)
        if platform != sel["platform"] or name != sel["name"]:
            raise SystemExit(f"device {sel['index']} is {platform} / {name}, expected {sel}")
        return d

    def build(self, source, binary, options, lean=None):
        """A built program; CLError carrying the build log if it does not build. ``lean``:
        tried first for a source (see the module's doc); the whole header if that fails."""
        if lean and not binary:
            try:
                return self.build(lean["prelude"] + source, None, f"{options} {lean['option']}".strip())
            except CLError:
                pass
        cl, err = self.cl, _int(0)
        dev = _c.byref(_ptr(self.device))
        if binary:
            status = _int(0)
            prog = cl.clCreateProgramWithBinary(self.ctx, 1, dev, _c.byref(_size(len(binary))),
                                                _c.byref(_c.c_char_p(binary)), _c.byref(status), _c.byref(err))
        else:
            text = source.encode()
            prog = cl.clCreateProgramWithSource(self.ctx, 1, _c.byref(_c.c_char_p(text)),
                                                _c.byref(_size(len(text))), _c.byref(err))
        self._check("clCreateProgram", err.value)
        code = cl.clBuildProgram(prog, 1, dev, (options or "").encode(), None, None)
        if code != 0:
            try:
                log = self._text(lambda h, *a: cl.clGetProgramBuildInfo(h, self.device, *a), prog, _PROGRAM_BUILD_LOG)
            except CLError:
                log = ""
            cl.clReleaseProgram(prog)
            raise CLError(f"clBuildProgram failed: {_ERRORS.get(code, 'error')} ({code})\n\n"
                          f"Build on {self.name} failed with log:\n{log}")
        return prog

    def binary(self, prog) -> bytes:
        cl, size = self.cl, _size(0)
        self._check("clGetProgramInfo", cl.clGetProgramInfo(prog, _PROGRAM_BINARY_SIZES, _c.sizeof(_size),
                                                            _c.byref(size), None))
        buf = _c.create_string_buffer(size.value)
        ptrs = (_ptr * 1)(_c.cast(buf, _ptr))
        self._check("clGetProgramInfo", cl.clGetProgramInfo(prog, _PROGRAM_BINARIES, _c.sizeof(ptrs), ptrs, None))
        return buf.raw[:size.value]

    def run(self, prog, launch) -> dict:
        """One launch on zero-filled (or given) buffers, waited for; {arg index: bytes read back}."""
        cl, err = self.cl, _int(0)
        kernel = cl.clCreateKernel(prog, launch["name"].encode(), _c.byref(err))
        self._check("clCreateKernel", err.value)
        bufs = {}
        try:
            for i, a in enumerate(launch["args"]):
                if a[0] == "buf":
                    nbytes = max(int(a[1]), 4)
                    data = base64.b64decode(a[2]).ljust(nbytes, b"\0") if a[2] else bytes(nbytes)
                    buf = cl.clCreateBuffer(self.ctx, _MEM_READ_WRITE | _MEM_COPY_HOST_PTR, nbytes, data,
                                            _c.byref(err))
                    self._check("clCreateBuffer", err.value)
                    bufs[i] = (buf, nbytes)
                    self._check("clSetKernelArg", cl.clSetKernelArg(kernel, i, _c.sizeof(_ptr), _c.byref(_ptr(buf))))
                else:
                    value = struct.pack(_SCALARS[a[0]], a[1])
                    self._check("clSetKernelArg", cl.clSetKernelArg(kernel, i, len(value), value))
            dims = len(launch["global"])
            glob = (_size * dims)(*launch["global"])
            local = None if launch["local"] is None else (_size * dims)(*launch["local"])
            self._check("clEnqueueNDRangeKernel", cl.clEnqueueNDRangeKernel(self.queue, kernel, dims, None, glob,
                                                                            local, 0, None, None))
            self._check("clFinish", cl.clFinish(self.queue))
            out = {}
            for i in launch.get("read", []):
                buf, nbytes = bufs[i]
                host = _c.create_string_buffer(nbytes)
                self._check("clEnqueueReadBuffer", cl.clEnqueueReadBuffer(self.queue, buf, 1, 0, nbytes, host, 0,
                                                                          None, None))
                out[i] = host.raw
            return out
        finally:
            for buf, _ in bufs.values():
                cl.clReleaseMemObject(buf)
            cl.clReleaseKernel(kernel)


def _answer(out, msg):
    out.write(json.dumps(msg) + "\n")
    out.flush()


def main():
    sel = json.loads(sys.argv[1])
    ocl = OpenCL(sel)
    out = sys.stdout
    _answer(out, {"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        req = json.loads(line)
        source = req.get("source") or ""
        try:
            _fault(source)
            prog = ocl.build(source, base64.b64decode(req["binary"]) if req.get("binary") else None,
                             req.get("options", ""), sel.get("lean"))
        except CLError as exc:
            _answer(out, {"ok": False, "error": str(exc)})
            continue
        try:
            outputs = {}
            for li, launch in enumerate(req.get("launches") or []):
                for i, data in ocl.run(prog, launch).items():
                    outputs[f"{li}:{i}"] = base64.b64encode(data).decode()
            binary = ocl.binary(prog) if req.get("want_binary", True) else None
        except Exception as exc:  # a launch that fails normally: report it, keep serving
            _answer(out, {"ok": False, "error": f"launch failed: {exc}"})
            continue
        finally:
            ocl.cl.clReleaseProgram(prog)
        _answer(out, {"ok": True, "binary": None if binary is None else base64.b64encode(binary).decode(),
                      "outputs": outputs})


if __name__ == "__main__":
    main()
