"""Every GEMM variant the device probe may fall back to computes the right numbers, on
every OpenCL implementation `./dev test` covers (core tests): the register-blocked GEMM
with float16, float8, float4 and scalar accumulators, and the local-memory tiled GEMM
(which CPUs never pick, so its barriers are checked here, under Oclgrind's race check)."""
import base64

import numpy as np
import pyopencl as cl
import pytest

import engine
from engine import probe, runtime


def _run_probe_kernels(dev, kind, variant):
    for source, launch, check in probe._probe_kernels(kind, variant):
        prg = cl.Program(dev.context, source).build(dev._extra_options)
        bufs = []
        for a in launch["args"]:
            host = np.frombuffer(base64.b64decode(a[2]), np.uint8).copy()
            bufs.append(cl.Buffer(dev.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=host))
        cl.Kernel(prg, launch["name"])(dev.queue, tuple(launch["global"]), tuple(launch["local"] or ()) or None, *bufs)
        out = np.empty(launch["args"][0][1] // 4, np.float32)
        cl.enqueue_copy(dev.queue, out, bufs[0], is_blocking=True)
        got, want = check(out)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{launch['name']} ({kind} {variant})")


@pytest.mark.parametrize("vw", [16, 8, 4, 1])
def test_register_blocked_gemm_at_every_vector_width(vw):
    _run_probe_kernels(engine.default_device(), "gemm", vw)


@pytest.mark.parametrize("tile", [16, 32, 64])
def test_local_memory_tiled_gemm(tile):
    _run_probe_kernels(engine.default_device(), "tiled", tile)


@pytest.mark.parametrize("vw", [8, 4, 1])
def test_models_gemm_through_the_engine_at_a_narrower_width(vw):
    """What a device whose probe dropped the wider vectors runs: the engine's own GEMM
    (fused bias + relu epilogue, implicit A), specialised to ``vw`` by the runtime."""
    d = engine.default_device()
    if d.kind == "gpu":
        pytest.skip("GPUs use the tiled GEMM")
    dev = runtime.Device(d.cl_device, d.index)          # its own caches, not the shared default's
    dev._caps = dict(d.capabilities(), gemm_vector_width=vw)
    rng = np.random.default_rng(vw)
    a, b, bias = (rng.standard_normal(s).astype(np.float32) for s in ((37, 21), (21, 70), (70,)))
    out = (engine.tensor(a, device=dev) @ engine.tensor(b, device=dev) + engine.tensor(bias, device=dev)).relu()
    np.testing.assert_allclose(out.numpy(), np.maximum(a @ b + bias, 0), rtol=1e-4, atol=1e-4)
    gemms = [ck.spec for ck in dev._programs.values() if ck.spec.template == "gemm"]
    vec = "float" if vw == 1 else f"float{vw}"
    assert gemms and all(s.params["VW"] == vw and f"{vec} acc0_0" in s.source for s in gemms)
