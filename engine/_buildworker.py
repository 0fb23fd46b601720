"""The child process that builds (and, where the driver compiles at first launch, launches)
new OpenCL programs for the runtime (engine/build_child.py starts it), so that a driver's
compiler that aborts, segfaults or hangs takes down this process, never the user's.

Run as a script (``python _buildworker.py DEVICE-JSON``); it imports only pyopencl and
numpy, not the engine. It picks the device the parent names (index in the parent's order,
checked by platform and name), prints one ``ready`` line, then answers one JSON request
per line on stdin with one JSON line on stdout:

  {"source" | "binary" (base64), "options",
   "launches": [{"name", "global": [...], "local": [...] | null,
                 "args": [["buf", nbytes, base64 data | null], ["u32" | "i32" | "f32", value]],
                 "read": [arg index, ...]}, ...],
   "want_binary": true | false (default true)}
  -> {"ok": true, "binary": base64 | null, "outputs": {"launch:arg": base64}}
   | {"ok": false, "error": build log or launch error}   (an ordinary failure, not a crash)

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
import json
import os
import sys
import time


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
                import ctypes
                ctypes.string_at(0)
            if action == "hang":
                while True:
                    time.sleep(3600)
            if action == "exit":
                os._exit(3)


def _device(sel):
    import pyopencl as cl
    found = []
    for p in cl.get_platforms():
        try:
            found.extend(p.get_devices())
        except cl.Error:
            continue
    d = found[sel["index"]]
    if d.platform.name.strip() != sel["platform"] or d.name.strip() != sel["name"]:
        raise SystemExit(f"device {sel['index']} is {d.platform.name} / {d.name}, expected {sel}")
    return d


def main():
    import numpy as np
    import pyopencl as cl
    dev = _device(json.loads(sys.argv[1]))
    ctx = cl.Context([dev])
    queue = cl.CommandQueue(ctx)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        source = req.get("source") or ""
        try:
            _fault(source)
            if req.get("binary"):
                program = cl.Program(ctx, [dev], [base64.b64decode(req["binary"])]).build(req.get("options", ""))
            else:
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    program = cl.Program(ctx, source).build(req.get("options", ""))
        except cl.Error as exc:
            out.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
            out.flush()
            continue
        outputs = {}
        try:
            for li, launch in enumerate(req.get("launches") or []):
                kernel = getattr(program, launch["name"])
                args, bufs = [], []
                for a in launch["args"]:
                    if a[0] == "buf":
                        nbytes = max(int(a[1]), 4)
                        if a[2]:
                            data = base64.b64decode(a[2]).ljust(nbytes, b"\0")
                            buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                                            hostbuf=np.frombuffer(data, np.uint8).copy())
                        else:       # zeros of the real size, filled on the device
                            buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, nbytes)
                            cl.enqueue_fill_buffer(queue, buf, np.uint32(0), 0, nbytes - nbytes % 4)
                        bufs.append(buf)
                        args.append(buf)
                    else:
                        args.append({"u32": np.uint32, "i32": np.int32, "i64": np.int64, "u8": np.uint8,
                                      "f32": np.float32}[a[0]](a[1]))
                        bufs.append(None)
                kernel(queue, tuple(launch["global"]), None if launch["local"] is None else tuple(launch["local"]),
                       *args)
                queue.finish()
                for i in launch.get("read", []):
                    host = np.empty(max(int(launch["args"][i][1]), 4), np.uint8)
                    cl.enqueue_copy(queue, host, bufs[i], is_blocking=True)
                    outputs[f"{li}:{i}"] = base64.b64encode(host.tobytes()).decode()
            binary = program.get_info(cl.program_info.BINARIES)[0] if req.get("want_binary", True) else None
        except Exception as exc:  # a launch that fails normally: report it, keep serving
            out.write(json.dumps({"ok": False, "error": f"launch failed: {exc}"}) + "\n")
            out.flush()
            continue
        out.write(json.dumps({"ok": True, "binary": None if binary is None else base64.b64encode(binary).decode(),
                              "outputs": outputs}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
