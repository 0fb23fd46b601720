"""The OpenCL runtime: devices, buffers (pooled), programs (cached in memory and on disk),
launches and profiling events. Only the runtime's modules import pyopencl (the build
child, engine/_buildworker.py, is a separate process); this module gathers their public
names:

- engine/device.py: ``Device`` (context, queue, buffer pool, launches, capabilities);
- engine/device_buffer.py: ``Buffer``, ``NP_DTYPES``;
- engine/program_cache.py: building programs, the memory and disk caches, ``BuildError``;
- engine/build_child.py: the child process that builds programs first;
- engine/probe.py: what each device's compiler is known to take;
- engine/device_selection.py: ``devices()``, ENGINE_DEVICE, the default device;
- engine/files.py: ``cache_dir()``.

A driver's OpenCL compiler is untrusted code: it can abort, segfault or hang on valid
OpenCL C. So a program that is not in the cache is built (and, on drivers that compile
at first launch such as PoCL, launched once) in a child process first; the user's process
only loads the binary that came back. On its first use a device is probed there (the
kernel shapes we generate: GEMM vector widths, local-memory tiles, elementwise and
reduce kernels); what crashed or hung is remembered per device and driver in
``<cache dir>/devices.json`` and the engine uses the safer variant, with one warning.
"""
from __future__ import annotations

from .build_child import CompilerFallbackWarning
from .device import DEVICE_ALIASES, Device
from .device_buffer import NP_DTYPES, Buffer
from .device_selection import DeviceNotFound, default_device, devices, get_device, set_default_device
from .files import cache_dir
from .program_cache import BuildError, CacheEntryWarning, CompiledKernel

__all__ = ["Device", "Buffer", "BuildError", "DeviceNotFound", "devices", "default_device",
           "set_default_device", "get_device", "cache_dir", "NP_DTYPES", "CompiledKernel",
           "CompilerFallbackWarning", "CacheEntryWarning", "DEVICE_ALIASES"]
