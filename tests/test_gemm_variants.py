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


# --- the GPU template's variants (engine/tune.py enumerates them), run on this device as a GPU

def _as_gpu():
    """The default device, planned for as a GPU (the tiled GEMM is plain OpenCL)."""
    d = engine.default_device()
    dev = runtime.Device(d.cl_device, d.index)
    dev.kind = "gpu"
    dev._caps = dict(d.capabilities(), tiled_max=128)
    return dev


def _sample_variants():
    """Each shape class's default, then an evenly spaced deterministic sample of its space
    (tens of thousands of variants; each build here costs seconds)."""
    from engine import tune
    out = []
    for cls in tune.SHAPE_CLASSES:
        space = tune.variant_space(cls)
        out += [space[0]] + space[len(space) // 3::len(space) // 3][:2]
    return out


def _gemm_specs(dev):
    return [ck.spec for ck in dev._programs.values() if ck.spec.template == "gemm_tiled"]


def _rand(rng, *shape):
    x = rng.uniform(-1, 1, size=shape)
    x[np.abs(x) < 1e-3] = 0.5      # never zeros
    return x.astype(np.float32)


@pytest.mark.parametrize("variant", _sample_variants(), ids=lambda v: "-".join(f"{k}{x}" for k, x in v.items()))
def test_tiled_gemm_variant_batched_ragged_with_epilogue(variant):
    """relu(A @ B + bias), batched, M, N, K not multiples of any tile, against float64."""
    from engine import tune
    dev = _as_gpu()
    if tune.local_bytes(variant) > tune.device_local_bytes(dev):
        pytest.skip(f"the variant declares {tune.local_bytes(variant)} bytes of local memory; this device gives "
                    f"{tune.device_local_bytes(dev)} (the lowering uses the first version there)")
    rng = np.random.default_rng(sum(variant.values()))
    a, b, bias = _rand(rng, 2, 70, 37), _rand(rng, 2, 37, 45), _rand(rng, 45)
    knobs = {k: x for k, x in variant.items() if k not in ("TM", "TN")}
    with tune.override(variant["TM"], variant["TN"], variant=knobs):
        out = (engine.tensor(a, device=dev) @ engine.tensor(b, device=dev) + engine.tensor(bias, device=dev)).relu()
        got = out.numpy()
    want = np.maximum(a.astype(np.float64) @ b.astype(np.float64) + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    specs = _gemm_specs(dev)
    assert specs and all(s.params[k] == x for s in specs for k, x in variant.items()), "the variant was not used"
    assert all(s.local_size == (variant["TN"] // variant["WN"], variant["TM"] // variant["WM"], 1) for s in specs)


@pytest.mark.parametrize("variant", [
    {"WM": 16, "WN": 8, "KB": 16, "LV": 4, "BLOCK": 0, "VW": 4, "PAD": 0, "DBUF": 1, "MAD": 0},
    {"WM": 8, "WN": 4, "KB": 8, "LV": 2, "BLOCK": 1, "VW": 2, "PAD": 4, "DBUF": 0, "MAD": 1},
])
def test_tiled_gemm_variant_reads_a_convolution_in_place(variant):
    """The implicit GEMM (A read through its im2col view, not packed) of a GPU convolution,
    forward and weight gradient, against torch in float64."""
    torch = pytest.importorskip("torch")
    from engine import tune
    from engine.nn import functional as F
    dev = _as_gpu()
    rng = np.random.default_rng(7)
    x, w = _rand(rng, 2, 3, 9, 7), _rand(rng, 5, 3, 3, 3)
    with tune.override(64, 64, variant=variant):
        tx = engine.tensor(x, device=dev)
        tw = engine.tensor(w, device=dev, requires_grad=True)
        y = F.conv2d(tx, tw, padding=1).relu()
        y.sum().backward()
        got, gw = y.numpy(), tw.grad.numpy()
    rx = torch.tensor(x, dtype=torch.float64)
    rw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    ry = torch.nn.functional.conv2d(rx, rw, padding=1).relu()
    ry.sum().backward()
    np.testing.assert_allclose(got, ry.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, rw.grad.numpy(), rtol=1e-4, atol=1e-4)
    implicit = [s for s in _gemm_specs(dev) if not s.params["a_packed"]]
    assert implicit and all(s.params[k] == x for s in implicit for k, x in variant.items())


# --- the CPU template's B layouts: packed panels, or B's rows read in place

def _cpu_device():
    d = engine.default_device()
    if d.kind == "gpu":
        pytest.skip("GPUs use the tiled GEMM")
    return runtime.Device(d.cl_device, d.index)         # its own caches, so its kernels can be listed


def _cpu_gemms(dev):
    return [ck.spec for ck in dev._programs.values() if ck.spec.template == "gemm"]


@pytest.mark.parametrize("batch, M, K, N, tile, in_place", [
    ((), 37, 21, 64, (5, 16), True),          # whole strips, ragged rows
    ((), 19, 33, 200, (8, 16), True),         # ragged last strip (200 = 12 x 16 + 8) read column by column
    ((3,), 11, 17, 272, (4, 32), True),       # batched, ragged last strip (8.5 strips)
    ((2,), 9, 40, 40, (4, 16), False),        # too few strips for a ragged one: packed panels
])
def test_cpu_gemm_reads_b_in_place_batched_ragged_with_epilogue(batch, M, K, N, tile, in_place):
    from engine import tune
    dev = _cpu_device()
    rng = np.random.default_rng(M * N + K)
    a, b, bias = _rand(rng, *batch, M, K), _rand(rng, *batch, K, N), _rand(rng, N)
    with tune.override(*tile):
        x, w, c = (engine.tensor(v, device=dev) for v in (a, b, bias))
        got = ((x @ w) * 0.5 + c).relu().numpy()
    want = np.maximum((a.astype(np.float64) @ b) * 0.5 + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    gemms = _cpu_gemms(dev)
    assert len(gemms) == 1 and gemms[0].display["b_in_place"] == in_place
    assert [ck.spec.template for ck in dev._programs.values()] == ["gemm"] * in_place + ["elementwise", "gemm"] * (not in_place)


def test_cpu_gemm_reads_a_transposed_twice_weight_in_place_and_a_big_b_packed(monkeypatch):
    """x @ w.T.T (the input gradient of x @ w.T) reads w itself, no copy; a B above
    CPU_B_IN_PLACE_MAX floats is packed into panels (its rows far apart in memory)."""
    from engine import lowering
    dev = _cpu_device()
    rng = np.random.default_rng(5)
    a, w = _rand(rng, 24, 64), _rand(rng, 96, 64)
    x, wt = engine.tensor(a, device=dev), engine.tensor(w, device=dev)
    np.testing.assert_allclose((x @ wt.T.T.T).numpy(), a.astype(np.float64) @ w.T, rtol=1e-4, atol=1e-4)
    g = _rand(rng, 24, 96)
    np.testing.assert_allclose((engine.tensor(g, device=dev) @ wt.T.T).numpy(), g.astype(np.float64) @ w,
                               rtol=1e-4, atol=1e-4)
    in_place = [s.display["b_in_place"] for s in _cpu_gemms(dev)]
    assert in_place == [True, True]
    monkeypatch.setattr(lowering, "CPU_B_IN_PLACE_MAX", 96 * 64 - 1)
    np.testing.assert_allclose((x @ wt.T.T.T).numpy(), a.astype(np.float64) @ w.T, rtol=1e-4, atol=1e-4)
    assert [s.display["b_in_place"] for s in _cpu_gemms(dev)] == [True, True, False]


@pytest.mark.parametrize("batch, M, K, N", [((), 32, 130, 96), ((), 64, 160, 200), ((2,), 32, 128, 70)])
def test_cpu_gemm_of_a_transposed_weight_runs_as_the_transposed_product(batch, M, K, N):
    """x @ w.T + bias, ReLU (a Linear layer, w [N, K]) with fewer rows than outputs: the
    kernel computes (w @ x.T).T, reading w in place, and its epilogue stores C transposed;
    with a short K the plain product is kept (its transposed store would cost more)."""
    dev = _cpu_device()
    rng = np.random.default_rng(M + K + N)
    a, w, bias = _rand(rng, *batch, M, K), _rand(rng, *batch, N, K), _rand(rng, N)
    x, wt, c = (engine.tensor(v, device=dev) for v in (a, w, bias))
    got = ((x @ wt.transpose(-1, -2)) + c).relu().numpy()
    want = np.maximum(a.astype(np.float64) @ np.swapaxes(w, -1, -2) + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    gemms = _cpu_gemms(dev)
    assert len(gemms) == 1 and gemms[0].display["swapped"] and (gemms[0].display["M"], gemms[0].display["N"]) == (N, M)
    # the one copy is x.T (M x K floats), not w.T (K x N)
    copies = [ck.spec for ck in dev._programs.values() if ck.spec.template == "elementwise"]
    assert len(copies) == 1 and copies[0].display["numel"] == int(np.prod(batch, dtype=int)) * M * K
    short = engine.tensor(a[..., :10], device=dev) @ engine.tensor(w[..., :10], device=dev).transpose(-1, -2)
    np.testing.assert_allclose(short.numpy(), a[..., :10].astype(np.float64) @ np.swapaxes(w[..., :10], -1, -2),
                               rtol=1e-4, atol=1e-4)
    assert not _cpu_gemms(dev)[-1].display["swapped"]


# --- a GEMM cut into blocks of output rows (what an engine-node sends while backward runs)

@pytest.mark.parametrize("as_gpu", [False, True], ids=["register-blocked", "tiled"])
def test_gemm_split_into_row_blocks_gives_the_same_bits(as_gpu):
    """codegen.split_rows: each part of the grid computes its rows and only those, and
    together they give the whole launch's bits (relu(A @ B + bias), M not a multiple of
    the row block, against float64 too)."""
    from engine import launch, realize as rz, tune
    from engine.codegen import split_rows
    dev = _as_gpu() if as_gpu else runtime.Device(engine.default_device().cl_device, engine.default_device().index)
    rng = np.random.default_rng(11)
    a, b, bias = _rand(rng, 70, 37), _rand(rng, 37, 45), _rand(rng, 45)
    with tune.override(16, 16), launch.capture() as cap:
        out = (engine.tensor(a, device=dev) @ engine.tensor(b, device=dev) + engine.tensor(bias, device=dev)).relu()
        whole = out.numpy()
    np.testing.assert_allclose(whole, np.maximum(a.astype(np.float64) @ b + bias, 0), rtol=1e-4, atol=1e-5)
    gemm = next(it for it in cap.items if isinstance(it, launch.Launch) and "gemm" in it.spec.template)
    buf = rz.buffer_of(out.node)
    assert any(x is buf for x in gemm.args), "the GEMM writes the result itself (its epilogue fused)"
    parts = split_rows(gemm, [20, 45, 45, 0, 70])
    block = gemm.spec.params["TM" if gemm.spec.template == "gemm_tiled" else "R"]
    assert [end for _, end in parts] == [min(70, -(-r // block) * block) for r in (20, 45)] + [70]
    dev.upload(np.full(whole.shape, np.nan, np.float32), dest=buf)
    for k, (part, end) in enumerate(parts):
        launch.replay([part], dev)
        now = out.numpy()
        assert np.array_equal(now[:end], whole[:end]), f"rows before {end} after part {k}"
        assert np.isnan(now[end:]).all(), f"part {k} wrote rows past {end}"
    assert split_rows(next(it for it in cap.items if isinstance(it, launch.Launch) and it is not gemm), [20]) is None
