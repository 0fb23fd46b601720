"""The program cache of a device: built kernels in memory, program binaries on disk (each
entry checked against its source, options, device and driver before the driver sees it),
and building what is in neither, in the build child, falling back to a narrower GEMM
variant when the compiler crashes. A build error carries the log, the template and the
exact parameters that re-render the source, and where the source was saved."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from queue import Queue

import pyopencl as cl

from .build_child import (CompilerFallbackWarning, _binary_of, _ChildFailed, _env_float, _launches_of, _lean,
                          _lean_build, _safe_mode, _source_proven, _vec_name, _warn_once, _WorkerUnavailable)
from .codegen import GEMM_VECTOR_WIDTHS, with_vector_width
from .files import atomic_write, cache_dir
from .probe import _profile_path, _templates_digest

__all__ = ["BuildError", "CacheEntryWarning", "CompiledKernel", "ProgramCacheMixin"]


_MEMBER_FORMAT = "many-as-one/program-member"
_WARM_GRACE_S = 0.05     # how long a started child waits for real work before warming up on its own
_WARM_SOURCE = "__kernel void mao_warm_up(__global float* o) { o[get_global_id(0)] = 0.0f; }"


def _build_workers() -> int:
    """How many build children compile at once: ENGINE_BUILD_WORKERS, else this process's CPUs
    (0: none, i.e. no grouped builds: every kernel is built on its own, as build() does)."""
    try:
        n = int(os.environ.get("ENGINE_BUILD_WORKERS") or -1)
    except ValueError:
        n = -1
    if n < 0:
        try:
            n = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            n = os.cpu_count() or 1
    return max(0, n)


def _cost(item) -> int:
    """A kernel's compile time in small-kernel units: on PoCL a small kernel costs ~0.01 CPU-s
    to build and 0.02-0.04 at its first launch, a GEMM about twice that (bench/NOTES.md)."""
    return 2 if item[1].template.startswith("gemm") else 1


# the smallest group taken off the queue, in those units: each group is one more clBuildProgram,
# ~0.13 CPU-s of its own on PoCL (clang parsing OpenCL's header), which a smaller group would
# mostly be
_MIN_GROUP_COST = 3
# PoCL's first build in a process loads its kernel library (~0.45 CPU-s), in those units
_LIBRARY_LOAD_COST = 8


def _balanced(todo, n) -> list:
    """``todo`` in ``n`` groups of about equal compile time, in their first order within a group."""
    groups, loads = [[] for _ in range(n)], [0] * n
    for i, item in sorted(enumerate(todo), key=lambda e: -_cost(e[1])):
        j = loads.index(min(loads))
        groups[j].append((i, item))
        loads[j] += _cost(item)
    return [[item for _, item in sorted(g, key=lambda e: e[0])] for g in groups if g]


def _next_group(todo, children, fresh=False) -> list:
    """Take the next group off ``todo`` for a child that has come free: its share of what is
    left (guided self-scheduling), so groups shrink as the queue empties and the children
    finish together, whenever each came free (the one that probed starts late). A ``fresh``
    child, which has built nothing yet, takes less, as its first build also loads PoCL's
    kernel library."""
    left = sum(map(_cost, todo))
    want = max(_MIN_GROUP_COST, -(-(left - (_LIBRARY_LOAD_COST if fresh else 0)) // children))
    taken, cost = 0, 0
    while taken < len(todo) and cost < want:
        cost += _cost(todo[taken])
        taken += 1
    if left - cost < _MIN_GROUP_COST:       # what would be left is not worth a group of its own
        taken = len(todo)
    group = todo[:taken]
    del todo[:taken]
    return group


class BuildError(RuntimeError):
    """A kernel failed to compile: carries the build log, template, parameters and source path."""



class CacheEntryWarning(RuntimeWarning):
    """An on-disk program cache entry did not match its source, options or device; rebuilt."""



class ArgsKept:
    """A kernel object that keeps its arguments between launches and sets only those that
    changed: NVIDIA's driver takes ~10 us per clSetKernelArg, so a launch of 9 arguments
    cost the host ~90 us where one with its arguments already set costs ~11
    (bench/NOTES.md).  The arguments last set stay referenced, so no buffer the kernel
    points at is freed under it (and none is held that would be freed: the device's pool
    keeps every allocation it ever made)."""
    __slots__ = ("kernel", "last")

    def __init__(self, kernel):
        self.kernel, self.last = kernel, None

    def set(self, args: list):
        """The kernel object with `args` set (buffers compared by identity, a commit swaps
        them; scalars by value)."""
        last = self.last
        if last is None or len(last) != len(args):
            self.kernel.set_args(*args)
        else:
            for i, (new, old) in enumerate(zip(args, last)):
                if new is not old and not (type(new) is type(old) and new == old):
                    self.kernel.set_arg(i, new)
        self.last = args
        return self.kernel


class CompiledKernel:
    """A built kernel with the description it came from (name, source, template, params).
    `kernel` is the plain kernel object; Device.launch goes through `eager`, a kernel object
    of its own that keeps its arguments (ArgsKept)."""
    __slots__ = ("spec", "kernel", "device", "program", "eager")

    def __init__(self, spec, program, device):
        self.spec, self.program, self.device = spec, program, device
        self.kernel = cl.Kernel(program, spec.name)
        self.eager = None

    def new_kernel(self) -> ArgsKept:
        """Another kernel object of the same kernel, with arguments of its own (Device.launch,
        launch.replay).  From the kept program: asking a kernel for its program makes
        pyopencl probe the program for a kernel named '_source', which Oclgrind reports."""
        return ArgsKept(cl.Kernel(self.program, self.spec.name))


class _BundledSpec:
    """The description of a kernel that came from a bundle rather than from codegen."""

    args, global_size, local_size, fused, render = (), (), None, (), None

    def __init__(self, name, source):
        self.name, self.source, self.template, self.params, self.display = name, source, "bundle", {}, {}



class ProgramCacheMixin:
    """The program-cache half of engine.device.Device (which provides ``context``,
    ``cl_device``, ``capabilities()``, ``_worker()``, ``_programs`` and ``stats``)."""

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
        ready = self._prebuilt.pop(key, None)
        if ready is not None:      # compiled by prebuild with the other new kernels of its schedule
            self.stats["builds"] += 1
            self._programs[key] = ready
            return ready
        t0 = time.perf_counter()
        spec = self._specialize(spec)
        vkey = self._cache_key(spec.source, options) if spec.source is not None else key
        program = self._load_cached(spec, options, vkey)
        if program is not None:
            self.stats["disk_hits"] += 1
        else:
            program, spec, binary, payload = self._build_new(spec, options, vkey)
            self._store_binary(spec, options, self._cache_key(spec.source, options), binary, payload)
            self.stats["builds"] += 1
        self.stats["build_s"] += time.perf_counter() - t0
        ck = CompiledKernel(spec, program, self)
        self._programs[key] = ck
        return ck

    def _specialize(self, spec, profile=None):
        """The variant of ``spec`` this device's compiler is known to take (narrower GEMM
        vectors), by ``profile`` (default: the probed one, waiting for the probe)."""
        if spec.template != "gemm":
            return spec
        cap = (profile or self.capabilities()).get("gemm_vector_width", 16)
        return with_vector_width(spec, cap)

    # On-disk entries: one JSON header line (what the binary was built from: source, options,
    # device and driver, pyopencl; the binary's size and SHA-256), then the binary. Checked
    # before the driver sees the bytes, so a truncated, corrupted or swapped entry is rebuilt,
    # never run. The hashes are not a signature: whoever can write the cache directory (the
    # user's own ~/.cache) can write matching ones; they stop accidents and stale or
    # misplaced files, not an attacker who already has the user's file access.
    def _entry_path(self, key):
        return os.path.join(cache_dir(), "programs", f"{key}.bin")

    # The stored bytes after the header are the driver's binary, or (payload "source") the
    # source itself where the build child built and launched it and the driver keeps its own
    # compiled kernels (PoCL, see build_child._source_proven): building that source again
    # here compiles nothing the child did not already compile without crashing.
    def _entry_header(self, source, options, key, binary, payload="binary") -> dict:
        header = {"format": "many-as-one/program", "v": 2, "key": key, "device": self.identity,
                  "pyopencl": cl.VERSION_TEXT, "options": options,
                  "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
                  "binary_sha256": hashlib.sha256(binary).hexdigest(), "binary_size": len(binary)}
        if payload != "binary":
            header["payload"] = payload
        return header

    def _program_of(self, blob, payload, options):
        """The program an entry's bytes hold (its header already checked)."""
        if payload == "source":
            return self._build_source(blob.decode(), options)
        return self._from_binary(blob, options)

    def _build_source(self, source, options):
        """``source`` built with exactly ``options``, as the build child builds it (pyopencl's
        wrapper would add its own include path, and PoCL's kernel cache, which the child has
        filled, is keyed by the options too; on PoCL the lean way first, as there:
        build_child._lean); cl.RuntimeError (with the build log) if it fails."""
        low = getattr(getattr(cl, "_cl", None), "_Program", None)
        if low is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", cl.CompilerWarning)
                return cl.Program(self.context, source).build(options)

        def build(src, opts):
            program = low(self.context, src)
            program.build(opts.encode(), [self.cl_device])
            return program
        return _lean_build(_lean(self), build, source, options)

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
            if isinstance(header, dict) and header.get("format") == _MEMBER_FORMAT:
                return self._load_member(path, header, spec, options, key)
            expected = self._entry_header(spec.source, options, key, binary)
            payload = header.get("payload", "binary")
            bad = [k for k in ("format", "v", "key", "device", "pyopencl", "options", "source_sha256")
                   if header.get(k) != expected[k]]
            if not bad and (header.get("binary_size") != len(binary) or header.get("binary_sha256") != expected["binary_sha256"]):
                bad = ["binary (truncated or replaced)"]
            if not bad and payload not in ("binary", "source"):
                bad = ["payload"]
            if not bad and payload == "source" and expected["binary_sha256"] != expected["source_sha256"]:
                bad = ["source (not the kernel's)"]
        except (ValueError, AttributeError, UnicodeDecodeError):
            bad = ["header"]
        if bad:
            self._reject(path, "does not match " + ", ".join(bad))
            return None
        try:
            return self._program_of(binary, payload, options)
        except Exception as exc:  # a binary this driver will not take after all: rebuild from source
            self._reject(path, f"not loadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            return None

    def _load_member(self, path, header, spec, options, key):
        """A kernel built in a group (prebuild): its entry names the group's entry, whose
        header lists each member's name and source hash and whose binary is checked as a
        single program's is."""
        source_sha = hashlib.sha256(spec.source.encode()).hexdigest()
        expected = {"v": 1, "key": key, "device": self.identity, "pyopencl": cl.VERSION_TEXT, "options": options,
                    "source_sha256": source_sha, "name": spec.name}
        bad = [k for k, v in expected.items() if header.get(k) != v]
        gkey = header.get("group")
        if not bad and not (isinstance(gkey, str) and len(gkey) == 32 and gkey.isalnum() and gkey != key):
            bad = ["group"]
        if bad:
            self._reject(path, "does not match " + ", ".join(bad))
            return None
        program = self._group_programs.get(gkey)
        if program is not None:
            return program
        gpath = self._entry_path(gkey)
        try:
            with open(gpath, "rb") as f:
                ghead, _, binary = f.read().partition(b"\n")
            gheader = json.loads(ghead)
            ok = (isinstance(gheader, dict) and gheader.get("format") == "many-as-one/program"
                  and gheader.get("v") == 2 and gheader.get("key") == gkey and gheader.get("device") == self.identity
                  and gheader.get("pyopencl") == cl.VERSION_TEXT and gheader.get("options") == options
                  and (gheader.get("members") or {}).get(spec.name) == source_sha
                  and gheader.get("binary_size") == len(binary)
                  and gheader.get("binary_sha256") == hashlib.sha256(binary).hexdigest())
            payload = gheader.get("payload", "binary")
            ok = ok and (payload == "binary" or (payload == "source" and
                                                 gheader.get("source_sha256") == gheader.get("binary_sha256")))
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            ok = False
        if not ok:
            self._reject(path, f"names a group entry {gpath} that is missing or does not match")
            return None
        if gheader.get("templates") != _templates_digest():
            # A group written by other templates: this member's source is the same, but its
            # group-mates are older kernels, and loading it builds them all again at every
            # start (on PoCL first the lean way, which an older GEMM's vload16 fails with a
            # page of compiler errors on stderr).  Rebuilt, then cached as today's.
            self._reject(path, f"names a group entry {gpath} built by other kernel templates")
            try:
                os.remove(gpath)
            except OSError:
                pass
            return None
        try:
            program = self._program_of(binary, payload, options)
        except Exception as exc:
            self._reject(path, f"group not loadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            return None
        self._group_programs[gkey] = program
        return program

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

    def _store_binary(self, spec, options, key, binary, payload="binary"):
        path = self._entry_path(key)
        try:
            if binary is None:
                return
            header = json.dumps(self._entry_header(spec.source, options, key, binary, payload)).encode()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, header + b"\n" + binary)
        except Exception as exc:  # the cache is an optimisation; never fail a run over it
            warnings.warn(f"could not store program binary in {path}: {exc}")

    # --- building the new kernels of a schedule together ------------------------------
    def expect(self, specs) -> None:
        """Kernels needed soon (realize.expect): built with the next prebuild's."""
        self._expected = [*self._expected, *specs]

    def prebuild(self, specs, options: str = "") -> int:
        """Compile the kernels of ``specs`` that no cache holds, before ``build`` asks for
        them one by one: grouped into one program per build worker (a clBuildProgram costs
        about the same for one kernel as for thirty on PoCL), the groups in parallel build
        children (ENGINE_BUILD_WORKERS, default: the CPUs this process may use), each
        kernel launched once there where the driver compiles at first launch. Only an
        optimisation: a group whose child crashes, hangs or reports an error is dropped, and
        ``build`` then builds its kernels one at a time as before, with the same crash
        isolation, fallbacks and error reports. Returns how many kernels it compiled."""
        given_options = options
        if self._extra_options:
            options = f"{options} {self._extra_options}".strip()
        specs, self._expected = [*specs, *self._expected], []     # realize.expect's, built now too
        # while the probe runs on child 0 (Device._probe_in_background), the kernels are built
        # for the width it tries first, by whichever child is free (_build_beside_probe)
        speculative = self.probe_pending()
        profile = self.planning_profile()
        bad = profile.get("bad_programs", {})
        todo, keys, names, originals = [], set(), set(), {}
        for spec in specs:
            if getattr(spec, "source", None) is None or spec.template == "bundle":
                continue
            key = self._cache_key(spec.source, options)
            if key in self._programs or key in self._prebuilt or key in keys:
                continue
            keys.add(key)
            originals[key] = spec
            item = self._admitted(key, spec, options, bad, names, profile)
            if item is not None:
                todo.append(item)
        workers = _build_workers()
        if len(todo) < 2 or not workers:
            if speculative:
                self.capabilities()     # build() will want it; wait here as before
            return 0
        t0, built = time.perf_counter(), 0
        n = max(1, min(workers, len(todo) // 2))
        if speculative:
            results, dropped = self._build_beside_probe(todo, list(range(n)), options, profile)
            self.stats["beside_probe"] += len(todo)
            if dropped:     # the probe chose another width: those kernels again, grouped, for it
                self.stats["build_s"] += time.perf_counter() - t0
                built = self.prebuild([originals[key] for key, _, _ in dropped], given_options)
                t0 = time.perf_counter()
        else:
            jobs = [(lambda c=c, slot=slot: (c, self._build_group(c, slot, options, load=False)))
                    for slot, c in enumerate(_balanced(todo, n))]
            if len(jobs) == 1 or _safe_mode(self) == "off":     # in this process: one build at a time
                results = [self._loaded(job(), options) for job in jobs]
            else:
                with ThreadPoolExecutor(len(jobs)) as pool:
                    results = [self._loaded(f.result(), options) for f in as_completed(pool.submit(j) for j in jobs)]
        for chunk, (program, gkey, source, binary, payload) in results:
            if program is None:
                self.stats["group_failures"] += 1
                continue
            self._group_programs[gkey] = program
            self._store_group(chunk, options, gkey, source, binary, payload)
            for key, vspec, _ in chunk:
                self._prebuilt[key] = CompiledKernel(vspec, program, self)
            self.stats["programs"] += 1
            built += len(chunk)
        self.stats["build_s"] += time.perf_counter() - t0
        return built

    def _loaded(self, result, options):
        """A built group with its program made here, in the thread that calls prebuild, as
        each group comes back (the children build in parallel, but Oclgrind was seen to
        segfault loading binaries from several threads at once)."""
        chunk, (program, gkey, source, binary, payload) = result
        if program is None and binary is not None:
            try:
                program = self._program_of(binary, payload, options)
            except Exception:
                program = None
        return chunk, (program, gkey, source, binary, payload)

    def _build_beside_probe(self, items, slots, options, profile) -> tuple:
        """([(chunk, _build_group's result)], [dropped items]) of groups built for ``profile``'s GEMM width while
        the probe runs on child 0. The children ``slots`` take groups off one queue as they
        come free (child 0 once the probe has answered), each its share of what is left
        (_next_group), GEMMs first, so however long the probe takes, neither child idles
        while the other has a queue and the last groups are quick. If the probe rejects that
        width, the children still compiling for it are stopped (a width that hangs the
        compiler must not hold the user for the build timeout) and nothing built for it is
        kept (nor counted as a failed group): those items come back as dropped, and prebuild
        builds them again, grouped, for the width the probe chose."""
        width = profile.get("gemm_vector_width")
        todo = sorted(items, key=lambda item: -_cost(item))    # GEMMs first: the last groups are the cheap kernels
        lock, busy, done, unbuilt = threading.Lock(), set(), Queue(), []

        def child(slot):
            try:
                if slot == 0 and self.capabilities().get("gemm_vector_width") != width:
                    return
                while True:
                    with lock:
                        if not todo:
                            return
                        chunk = _next_group(todo, len(slots), fresh=self._worker(slot).requests == 0)
                        busy.add(slot)
                    res = self._build_group(chunk, slot, options, load=False)
                    with lock:
                        busy.discard(slot)
                    done.put((chunk, res))
            finally:
                done.put(None)

        def verdict():      # stop what is being built for a width the probe rejected
            if self.capabilities().get("gemm_vector_width") != width:
                with lock:
                    unbuilt.extend(todo)
                    todo.clear()
                    stop = [self._worker(slot).proc for slot in busy if slot]
                for proc in stop:
                    if proc is not None:
                        proc.kill()     # its request then ends as a crash: that group is dropped

        results = []
        with ThreadPoolExecutor(len(slots) + 1) as pool:
            watcher = pool.submit(verdict)
            for slot in slots:
                pool.submit(child, slot)
            left = len(slots)
            while left:
                item = done.get()
                if item is None:
                    left -= 1
                else:
                    results.append(self._loaded(item, options))
            watcher.result()
        final = self.capabilities()
        kept, dropped = [], list(unbuilt)
        for chunk, res in results:
            if all(self._specialize(vspec, final).source == vspec.source for _, vspec, _ in chunk):
                kept.append((chunk, res))
            else:
                dropped.extend(chunk)
        self.stats["dropped_after_probe"] += len(dropped)
        return kept, dropped

    def _admitted(self, key, spec, options, bad, names, profile):
        """(key, the variant to build, its key), or None where build() deals with the kernel:
        remembered as bad, a name twice, or on disk."""
        vspec = self._specialize(spec, profile)
        vkey = self._cache_key(vspec.source, options)
        if vkey in bad or vspec.name in names or os.path.exists(self._entry_path(vkey)):
            return None
        names.add(vspec.name)
        return key, vspec, vkey

    def _warm_more_workers(self):
        """On a cold start (the device is being probed, so nothing of it is cached either),
        start the extra build children beside the probe, so prebuild finds them ready."""
        if _safe_mode(self) == "off":
            return
        for slot in range(1, _build_workers()):
            threading.Thread(target=self._warm_worker, args=(slot,), daemon=True).start()

    def _warm_worker(self, slot):
        """Start child ``slot``; if no build has come for it shortly after, have it compile a
        trivial kernel (PoCL's first build in a process loads its kernel library, ~0.5 s),
        so that the first real group finds that done. Not when a group is already waiting:
        the trivial build would cost that group a whole clBuildProgram (~0.2 s of parsing
        OpenCL's header) and gain nothing, as the group's own build loads the library."""
        try:
            worker = self._worker(slot)
            seen = worker.start()
            time.sleep(_WARM_GRACE_S)
            if worker.requests == seen:
                worker.request(_WARM_SOURCE, self._extra_options, [], want_binary=False,
                               timeout=_env_float("ENGINE_BUILD_START_TIMEOUT", 120.0))
        except Exception:   # a child that will not start or build: prebuild's own request finds out
            pass

    def _build_group(self, chunk, slot, options, load=True):
        """(program or None, its cache key, its source, what to store or None, its payload
        kind) of one group, built in build child number ``slot`` (in this process where
        builds are not isolated); ``load=False``: what the child built is not made a program
        here (the caller does, in one thread)."""
        source = "\n".join(vspec.source for _, vspec, _ in chunk)
        gkey = self._cache_key(source, options)
        mode = _safe_mode(self)
        try:
            if mode == "off":
                program = self._build_source(source, options)
                return program, gkey, source, _binary_of(program), "binary"
            launches = [l for _, vspec, _ in chunk for l in _launches_of(vspec)] if mode == "launch" else []
            proven = _source_proven(self)
            resp = self._worker(slot).request(source, options, launches, want_binary=not proven,
                                              timeout=_env_float("ENGINE_BUILD_TIMEOUT", 300.0))
            if not resp["ok"]:
                return None, gkey, source, None, None
            blob, payload = (source.encode(), "source") if proven else (base64.b64decode(resp["binary"]), "binary")
            return (self._program_of(blob, payload, options) if load else None), gkey, source, blob, payload
        except Exception:       # _ChildFailed, _WorkerUnavailable, a build error: build() retries one by one
            return None, gkey, source, None, None

    def _store_group(self, chunk, options, gkey, source, binary, payload):
        """The group's binary (or proven source) once, under its own key, its header listing
        each member; each member's entry names the group (see _load_member)."""
        if binary is None:
            return
        if len(chunk) == 1:     # the group's source is its one member's: gkey is the member's own key,
            _, vspec, vkey = chunk[0]   # and a member entry written there would name itself as its group
            return self._store_binary(vspec, options, vkey, binary, payload)
        try:
            header = self._entry_header(source, options, gkey, binary, payload)
            header["members"] = {vspec.name: hashlib.sha256(vspec.source.encode()).hexdigest()
                                 for _, vspec, _ in chunk}
            header["templates"] = _templates_digest()      # see _load_member
            path = self._entry_path(gkey)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, json.dumps(header).encode() + b"\n" + binary)
            for _, vspec, vkey in chunk:
                member = {"format": _MEMBER_FORMAT, "v": 1, "key": vkey, "device": self.identity,
                          "pyopencl": cl.VERSION_TEXT, "options": options, "name": vspec.name,
                          "source_sha256": hashlib.sha256(vspec.source.encode()).hexdigest(), "group": gkey}
                atomic_write(self._entry_path(vkey), json.dumps(member).encode() + b"\n")
        except Exception as exc:  # the cache is an optimisation; never fail a run over it
            warnings.warn(f"could not store a group of program binaries in {cache_dir()}: {exc}")

    def _build_new(self, spec, options, key, launches=None):
        """Compile a program not in any cache: (program, the spec it was built from, binary).
        ``launches``: what the child launches once (default: ``spec``'s own launch)."""
        bad = self.capabilities().get("bad_programs", {}).get(key)
        if bad:
            raise self._build_error(spec, options, key, f"the OpenCL compiler {bad} on this kernel before "
                                    f"(remembered in {_profile_path()}; delete the entry to try again)")
        if _safe_mode(self) == "off":
            program = self._compile(spec, options, key)
            return program, spec, _binary_of(program), "binary"
        proven = _source_proven(self)
        candidates = [spec]
        if spec.template == "gemm":
            candidates += [with_vector_width(spec, v) for v in GEMM_VECTOR_WIDTHS if v < spec.params["VW"]]
        failures = []
        for cand in candidates:
            try:
                todo = (_launches_of(cand) if launches is None else launches) if _safe_mode(self) == "launch" else []
                resp = self._worker().request(cand.source, options, todo, want_binary=not proven,
                                              timeout=_env_float("ENGINE_BUILD_TIMEOUT", 300.0))
            except _ChildFailed as f:
                failures.append(f)
                if cand.template == "gemm":
                    self._remember_gemm_failure(cand.params["VW"], f)
                continue
            except _WorkerUnavailable as exc:
                self._no_worker = True      # for the rest of this process
                warnings.warn(f"{exc}; building in this process, unprotected", CompilerFallbackWarning, stacklevel=4)
                program = self._compile(cand, options, key)
                return program, cand, _binary_of(program), "binary"
            if not resp["ok"]:      # an ordinary build error (with its log), or built but would not launch
                raise self._build_error(cand, options, key, resp["error"])
            if proven:          # the child built and launched it: this compiles nothing new
                return self._compile(cand, options, key), cand, cand.source.encode(), "source"
            binary = base64.b64decode(resp["binary"])
            try:
                program = self._from_binary(binary, options)
            except Exception:   # a driver whose binaries do not round-trip: the child proved the source safe
                program = self._compile(cand, options, key)
                binary = _binary_of(program)
            return program, cand, binary, "binary"
        what = failures[-1]
        self._remember(lambda prof: prof.setdefault("bad_programs", {}).__setitem__(key, what.kind))
        raise self._build_error(spec, options, key, f"the OpenCL compiler {what.kind} on every variant of this "
                                f"kernel ({len(candidates)} tried); last: {what.detail}")

    def _remember_gemm_failure(self, vw, failure):
        """A GEMM variant crashed or hung outside the probe: narrow the device's GEMM vectors."""
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
            return self._build_source(spec.source, options)
        except cl.RuntimeError as exc:
            raise self._build_error(spec, options, key, str(exc)) from exc

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
            program = self._build_new(spec, options, self._cache_key(whole_source, options), launches or [])[0]
        for name, src in sources.items():
            spec = _BundledSpec(name, src)
            self._programs[self._cache_key(src, options)] = CompiledKernel(spec, program, self)
        return len(sources)
