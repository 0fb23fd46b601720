"""Where an engine-node's host time per step goes (`bench.scaling --hostprof DIR`).

Python imports this file at start-up in every process whose PYTHONPATH holds this folder;
bench.scaling puts it there for the nodes only.  In a node (`--listen` on its command
line) with BENCH_HOSTPROF=DIR set, it wraps pyopencl's enqueues, maps, flushes, waits and
clSetKernelArg, the streamed exchange's waits and the step functions with timers, and after
steps WARM..WARM+STEPS writes DIR/hostprof_<pid>.txt: wall time per step, then ms and calls
per step of each, largest first.  A timer inside another one's call is not counted twice
(a driver call made while waiting counts as waiting).  The timers cost ~1 us a call.
"""
import collections
import functools
import os
import sys
import time

WARM, STEPS = 20, 100
OUT = os.environ.get("BENCH_HOSTPROF")


def _install(out: str) -> None:
    import pyopencl as cl
    from cluster import devicetrain, shmstream

    total, calls, inside = collections.Counter(), collections.Counter(), [0]

    def count(name: str, t0: float) -> None:
        total[name] += time.perf_counter() - t0
        calls[name] += 1

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            if inside[0]:
                return fn(*a, **kw)
            inside[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                count(name, t0)
                inside[0] -= 1
        return wrapper

    for name in ("enqueue_nd_range_kernel", "enqueue_copy", "enqueue_map_buffer", "enqueue_marker",
                 "enqueue_barrier", "enqueue_fill_buffer", "wait_for_events"):
        setattr(cl, name, timed(name, getattr(cl, name)))
    for cls, name in ((cl.CommandQueue, "flush"), (cl.CommandQueue, "finish"), (cl.Event, "wait"),
                      (cl.UserEvent, "set_status"), (cl.Kernel, "set_arg")):
        setattr(cls, name, timed(f"{cls.__name__}.{name}", getattr(cls, name)))
    shmstream.Stream.until = timed("waiting for other ranks (Stream.until)", shmstream.Stream.until)
    shmstream.Stream.wait = timed("waiting for other ranks (Stream.wait)", shmstream.Stream.wait)
    trainer = devicetrain.DeviceTrainer
    trainer.settle = timed("waiting for the device (settle)", trainer.settle)
    state = {"steps": 0, "t0": 0.0}

    def step(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                count(name, t0)
                state["steps"] += 1
                if state["steps"] == WARM:
                    total.clear()
                    calls.clear()
                    state["t0"] = time.perf_counter()
                elif state["steps"] == WARM + STEPS:
                    _write(out, time.perf_counter() - state["t0"], total, calls)
        return wrapper

    trainer.streamed_step = step("DeviceTrainer.streamed_step", trainer.streamed_step)
    trainer.launch_alone = step("DeviceTrainer.launch_alone", trainer.launch_alone)


def _write(out: str, wall: float, total, calls) -> None:
    with open(os.path.join(out, f"hostprof_{os.getpid()}.txt"), "w") as f:
        f.write(f"steps {WARM}-{WARM + STEPS}: wall {wall * 1e3 / STEPS:.3f} ms a step\n")
        for name in sorted(total, key=lambda k: -total[k]):
            f.write(f"{name:44s} {total[name] * 1e3 / STEPS:8.3f} ms {calls[name] / STEPS:7.1f} calls a step\n")


if OUT and "--listen" in sys.argv:
    try:
        _install(OUT)
    except Exception as e:     # a profiler must never stop the node
        sys.stderr.write(f"bench/hostprof: not installed ({type(e).__name__}: {e})\n")
