"""Never crash, whatever the OpenCL compiler does (issue 9): new programs are built, and on
PoCL launched once, in a child process; the device probe there finds which GEMM variant
the compiler builds and runs; a variant that crashes or hangs is dropped for a safer one
(float16 -> float8 -> float4 -> float vectors), remembered per device on disk, with one
warning, and the user's process goes on with correct numbers.

The crashes and hangs are injected in the build child (ENGINE_BUILD_FAULT, a hook only
tests use: abort / segv / hang where the driver would compile a source containing a
needle), so this runs on any machine, Intel or AMD, any OpenCL implementation."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine import build_child, program_cache, runtime

pytestmark = pytest.mark.skipif(build_child._safe_mode(engine.default_device()) == "off",
                                reason="ENGINE_SAFE_BUILD=off: builds are not isolated")

USER = r"""
import json, sys, warnings
import numpy as np
import engine
warnings.simplefilter("always")
d = engine.default_device()
rng = np.random.default_rng(0)
a, b, bias = (rng.standard_normal(s).astype(np.float32) for s in ((40, 24), (24, 50), (50,)))
out = (engine.tensor(a) @ engine.tensor(b) + engine.tensor(bias)).relu().numpy()
err = float(np.abs(out - np.maximum(a @ b + bias, 0)).max())
srcs = [ck.spec.source for ck in d._programs.values() if ck.spec.template == "gemm"]
caps = d.capabilities()
print(json.dumps({"err": err, "vw": caps["gemm_vector_width"], "dropped": caps["dropped"], "works": caps["works"],
                  "gemm_kernels": len(srcs), "float16_in_gemm": any("float16" in s for s in srcs),
                  "float8_in_gemm": any("float8" in s for s in srcs)}))
"""
# the float16 -> float8 -> float4 fallback is the CPU GEMM's; a GPU's tiled GEMM has its own probe
cpu_gemm = pytest.mark.skipif(engine.default_device().kind == "gpu", reason="GPUs use the tiled GEMM")


def _run(tmp_path, fault="", code=USER, **env):
    env = dict(os.environ, ENGINE_CACHE_DIR=str(tmp_path / "cache"), ENGINE_BUILD_FAULT=fault,
               POCL_CACHE_DIR=str(tmp_path / "pocl"), **env)
    env.pop("ENGINE_SAFE_BUILD", None)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"the user's process died ({p.returncode}):\n{p.stderr[-3000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def _fallback_warnings(stderr):
    return [l for l in stderr.splitlines() if "CompilerFallbackWarning" in l]


@pytest.mark.parametrize("action", ["abort", "segv"])
@cpu_gemm
def test_crashing_float16_build_falls_back_to_float8_and_is_remembered(tmp_path, action):
    out, err = _run(tmp_path, f"{action}:float16")
    assert out["err"] < 1e-4 and out["gemm_kernels"] >= 1
    assert out["vw"] == 8 and out["float8_in_gemm"] and not out["float16_in_gemm"]
    assert [d["variant"] for d in out["dropped"]] == ["gemm float16"] and out["dropped"][0]["why"] == "crashed"
    warned = _fallback_warnings(err)
    assert len(warned) == 1 and "crashed on gemm float16" in warned[0] and "using gemm float8" in warned[0]
    # remembered for the device: the next process uses float8 at once, says nothing, probes nothing
    out2, err2 = _run(tmp_path, "")
    assert out2["vw"] == 8 and out2["float8_in_gemm"] and not out2["float16_in_gemm"] and out2["err"] < 1e-4
    assert not _fallback_warnings(err2)
    prof = json.loads((tmp_path / "cache" / "devices.json").read_text())
    assert [p["gemm_vector_width"] for p in prof.values()] == [8]


@cpu_gemm
def test_hanging_builds_are_cut_off_and_the_next_safer_variant_used(tmp_path):
    out, err = _run(tmp_path, "hang:float16,segv:float8", ENGINE_PROBE_TIMEOUT="20")   # generous: a loaded machine compiles slowly
    assert out["err"] < 1e-4 and out["vw"] == 4
    assert [(d["variant"], d["why"]) for d in out["dropped"]] == [("gemm float16", "hung"), ("gemm float8", "crashed")]
    assert "gemm float4" in out["works"]
    assert len(_fallback_warnings(err)) == 2


@cpu_gemm
def test_a_crash_the_probe_missed_falls_back_at_build_time(tmp_path):
    """The probe's GEMM builds fine; the model's own GEMM (named mao_gemm_...) aborts the
    compiler at float16: the build child dies, the float8 variant of the same kernel is
    built instead, and the device's GEMM vector width is narrowed for later kernels."""
    out, err = _run(tmp_path, "abort:void mao_gemm&float16")
    assert out["err"] < 1e-4 and out["float8_in_gemm"] and not out["float16_in_gemm"]
    assert out["vw"] == 8 and out["dropped"][-1]["found_by"] == "build"
    warned = _fallback_warnings(err)
    assert len(warned) == 1 and "GEMM kernels with float16 vectors" in warned[0]


STATS = USER.replace('print(json.dumps({', 'print(json.dumps({"stats": d.stats, ')


@cpu_gemm
def test_a_cold_start_builds_beside_the_probe_and_keeps_what_it_confirms(tmp_path):
    """Empty caches on PoCL: the probe runs in the background on build child 0 while the
    kernels are built for the width it tries first; it confirms that width, so they are used."""
    if not engine.default_device().is_pocl or program_cache._build_workers() < 2:
        pytest.skip("the probe runs beside builds on PoCL with two or more build children")
    out, _ = _run(tmp_path, "", code=STATS)
    assert out["err"] < 1e-4 and out["stats"]["beside_probe"] >= 2 and out["stats"]["programs"] >= 1
    if out["vw"] == 16:     # the probe confirmed the width tried first (Intel; Debian's PoCL)
        assert out["float16_in_gemm"] and out["stats"]["dropped_after_probe"] == 0
        assert out["stats"]["group_failures"] == 0
    else:                   # the wheel's PoCL on AMD Zen 4 aborts on float16 (docs/ARCHITECTURE.md, the device probe)
        assert not out["float16_in_gemm"] and out["stats"]["dropped_after_probe"] >= 1
    warm, _ = _run(tmp_path, "", code=STATS)      # the profile is on disk now: no background probe
    assert warm["stats"]["beside_probe"] == 0 and warm["err"] < 1e-4


@cpu_gemm
def test_kernels_built_for_a_width_the_probe_then_rejects_are_dropped(tmp_path):
    """Only the probe's own float16 GEMM crashes: the model's float16 GEMM, built beside the
    probe, compiles fine, but the device is now float8 and that kernel must not be used."""
    if not engine.default_device().is_pocl or program_cache._build_workers() < 2:
        pytest.skip("the probe runs beside builds on PoCL with two or more build children")
    out, _ = _run(tmp_path, "abort:mao_probe_gemm&float16", code=STATS)
    assert out["vw"] == 8 and out["float8_in_gemm"] and not out["float16_in_gemm"] and out["err"] < 1e-4
    assert out["stats"]["dropped_after_probe"] >= 1 and out["stats"]["programs"] >= 1   # rebuilt, grouped
    assert [d["variant"] for d in out["dropped"]] == ["gemm float16"]


def test_a_kernel_with_no_safer_variant_raises_build_error_and_the_process_lives_on(tmp_path):
    code = r"""
import json, numpy as np, engine
x = engine.tensor(np.arange(6, dtype=np.float32))
errors = []
for _ in range(2):
    try:
        (x.exp() * 3.0).numpy()
    except engine.BuildError as e:
        errors.append(str(e))
print(json.dumps({"errors": errors, "after": (x + 1.0).numpy().tolist()}))
"""
    out, err = _run(tmp_path, "segv:3.0f", code=code)
    assert len(out["errors"]) == 2
    assert "crashed on every variant" in out["errors"][0] and "killed by signal" in out["errors"][0]
    assert "before" in out["errors"][1]       # remembered: not sent to the compiler again
    assert out["after"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert not _fallback_warnings(err)        # nothing safer was used, so no fallback is announced


def test_probe_is_cached_and_hot_path_never_spawns(tmp_path):
    """A warm start (programs and probe on disk) starts no build child at all."""
    _run(tmp_path, "")
    code = USER + r"""
print(json.dumps({"worker": d._build_worker is not None, **d.stats}))
"""
    out, _ = _run(tmp_path, "", code=code)
    assert out["worker"] is False and out["builds"] == 0 and out["disk_hits"] >= 1


def test_no_build_child_means_unprotected_in_process_builds_with_a_warning(tmp_path, monkeypatch):
    """Where a child process cannot be started (or dies before it is ready), builds still
    work, in this process, and the user is told they are unprotected; nothing is remembered
    on disk, so the next process tries the child again."""
    broken = tmp_path / "broken_worker.py"
    broken.write_text("import sys; sys.exit(7)\n")
    monkeypatch.setattr(build_child, "_WORKER_SCRIPT", str(broken))
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ENGINE_SAFE_BUILD", raising=False)
    d = engine.default_device()
    dev = runtime.Device(d.cl_device, d.index)
    spec = program_cache._BundledSpec("mao_seven", "__kernel void mao_seven(__global float* o) { o[0] = 7.0f; }")
    with pytest.warns(runtime.CompilerFallbackWarning, match="did not start"):
        ck = dev.build(spec)
    assert dev._no_worker and dev.stats["builds"] == 1 and ck.kernel.function_name == "mao_seven"
    assert "transient" in dev.capabilities() and not (tmp_path / "cache" / "devices.json").exists()
