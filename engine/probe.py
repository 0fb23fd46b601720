"""The device probe: on a device's first use, the kernel shapes we generate (GEMM vector
widths, local-memory tiles, elementwise and reduce kernels) are built and run in the build
child; what crashed, hung or computed wrong numbers is remembered per device, driver and
template text in ``<cache dir>/devices.json`` and the engine uses the safer variant."""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import time
import warnings

import numpy as np
import pyopencl as cl

import kernels

from .build_child import (CompilerFallbackWarning, _ChildFailed, _env_float, _safe_mode, _vec_name, _warn_once,
                          _WorkerUnavailable)
from .codegen import GEMM_VECTOR_WIDTHS
from .files import atomic_write, cache_dir

_PROBE_VERSION = 1
# what the probe tries first, and what plans assume while it runs in the background
FIRST_TRIED = {"gemm_vector_width": 16, "tiled_max": 128}


def _profile_path() -> str:
    return os.path.join(cache_dir(), "devices.json")


@functools.lru_cache(maxsize=None)
def _templates_digest() -> str:
    """The templates' text, hashed (read once per process)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(kernels.TEMPLATE_DIR)):
        if name.endswith(".mako"):
            with open(os.path.join(kernels.TEMPLATE_DIR, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:12]


def _profile_key(device) -> str:
    """Device, driver, pyopencl, probe version and the templates' text: a change to any re-probes."""
    return f"{device.identity}|pyopencl {cl.VERSION_TEXT}|probe {_PROBE_VERSION}|templates {_templates_digest()}"


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
        atomic_write(path, json.dumps(db, indent=1))
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
    if kind == "gemm":          # relu(A @ B + bias), M 32 x N 30 (W 32) x K 16, R 8: 4 work-items, one per group
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
            out.append((src, {"name": name, "global": [M // R, 1, 1], "local": [1, 1, 1], "args": args,
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
        resp = device._worker().request(source, device._extra_options, [p[1] for p in probes], timeout=timeout,
                                        want_binary=False)      # only the numbers matter
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
    t0 = time.perf_counter()
    mode = _safe_mode(device)
    prof = {"device": device.identity, "kind": device.kind, "safe_build": mode, "dropped": [], "works": [],
            **FIRST_TRIED}
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
