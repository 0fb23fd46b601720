"""Kernel launches: running one, the profiler's listeners, and the capture of a step's
launches (and host actions) that ``engine.compile`` replays with no scheduling or codegen.
The capture is per thread: a step traced in one thread never records another's launches.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import debug
from .device import timing
from .runtime import Buffer

__all__ = ["Launch", "RandState", "HostScalar", "capture", "capturing", "record", "record_host_action", "replay",
           "run_launch", "add_listener", "remove_listener"]

_local = threading.local()
_listeners: list = []   # profilers: called with (spec, device, event)


class HostScalar:
    """Marker base of a scalar kernel argument read from the host at each launch."""
    __slots__ = ()


class Launch:
    """One recorded kernel launch: replayable with no scheduling or codegen."""
    __slots__ = ("ck", "spec", "gsize", "lsize", "args", "rand", "bound", "offset")

    def __init__(self, ck, gsize, lsize, args, rand, spec=None, offset=None):
        self.ck, self.gsize, self.lsize, self.args, self.rand = ck, gsize, lsize, args, rand
        self.offset = offset     # global work offset: part of a kernel's grid (codegen.split_rows)
        # what the kernel was planned from (its built program may be shared with a bundle's)
        self.spec = spec if spec is not None else ck.spec
        self.bound = None    # a kernel object of its own (ArgsKept), made at its first replay


def _enqueue_bound(it: Launch, device):
    """Enqueue a replayed launch through a kernel object of its own that keeps its
    arguments (program_cache.ArgsKept): a replay sets only those that changed."""
    if it.bound is None:
        it.bound = it.ck.new_kernel()
    return device.enqueue_kernel(it.bound.set(_args(it)), it.gsize, it.lsize, it.offset)


class RandState:
    """Seed and offset of a RAND node; replays draw fresh numbers by advancing the offset."""
    __slots__ = ("seed", "offset", "numel")

    def __init__(self, seed, offset, numel):
        self.seed, self.offset, self.numel = seed, offset, numel


def capturing() -> bool:
    return getattr(_local, "items", None) is not None


def record(item) -> None:
    items = getattr(_local, "items", None)
    if items is not None:
        items.append(item)


def record_host_action(fn):
    """Run ``fn`` now, and again at this point of every replay of the captured step."""
    fn()
    record(fn)


class capture:
    """Context manager collecting every launch (and host action) into ``self.items``."""

    def __enter__(self):
        if capturing():
            raise RuntimeError("engine.compile: nested captures are not supported")
        self.items = _local.items = []
        return self

    def __exit__(self, *exc):
        _local.items = None


def add_listener(fn):
    _listeners.append(fn)


def remove_listener(fn):
    _listeners.remove(fn)


def _scalar(a):
    return np.float32(a.value) if a.dtype == "float32" else np.int32(a.value)


def _args(launch: Launch) -> list:
    """The kernel arguments of a launch as they are now (a storage's memory may have been
    swapped behind its Buffer, and host scalars change between replays)."""
    args = []
    for a in launch.args:
        if isinstance(a, Buffer):
            args.append(a.mem)
        elif isinstance(a, HostScalar):
            args.append(_scalar(a))
        elif isinstance(a, RandState):
            args.append(np.uint32(a.seed & 0xFFFFFFFF))
            args.append(np.uint32(a.offset & 0xFFFFFFFF))
    return args


def run_launch(launch: Launch, device):
    # ENGINE_DEBUG>=4 prints each launch's device time: it goes on a profiling queue
    with timing() if debug.level() >= 4 else contextlib.nullcontext():
        ev = device.launch(launch.ck, launch.gsize, launch.lsize, _args(launch), launch.offset)
    debug.on_launch(launch.spec, ev)
    if _listeners:
        for fn in _listeners:
            fn(launch.spec, device, ev)
    return ev


def replay(items, device):
    """Re-run a captured step: host actions in order, kernels with the same buffers."""
    # the debug level and the profilers are looked up once per replay, not per launch: a
    # node's step replays ~40 launches, and reading the environment was a fifth of the
    # host's time per launch (bench/NOTES.md)
    hooked = debug.level() >= 4 or bool(_listeners)
    for it in items:
        if isinstance(it, Launch):
            if it.rand is not None:
                it.rand.offset += it.rand.numel
                it.rand.seed = (it.rand.seed * 1103515245 + 12345) & 0x7FFFFFFF
            if hooked:
                run_launch(it, device)
            else:
                _enqueue_bound(it, device)
        else:
            it()


