"""The device-neutral IR and its per-device lowering (engine/lowering.py): the graph a user
builds holds plain MATMUL nodes; lowering for a device picks tiles, operand packing,
implicit GEMM and split-K. A "gpu" lowering runs here on PoCL too (the tiled GEMM is plain
OpenCL), through a copy of the default device that describes itself as a GPU."""
import numpy as np
import pytest
import torch

import engine
from engine import ir, lowering, runtime
from engine.nn import functional as F
from engine.validate import ProgramInvalid, check_program


class _Desc:
    """A device description for pure lowering tests (nothing runs on it)."""

    def __init__(self, kind, compute_units, tiled_max=128):
        self.kind, self.compute_units, self.identity = kind, compute_units, f"test|{kind}|{compute_units}"
        self._caps = {"tiled_max": tiled_max}

    def capabilities(self):
        return self._caps


def _device_as(kind, compute_units, tiled_max=32):
    """The default device, planned for as a device of ``kind`` with ``compute_units``."""
    d = engine.default_device()
    dev = runtime.Device(d.cl_device, d.index)
    dev.kind, dev.compute_units = kind, compute_units
    dev._caps = dict(d.capabilities(), tiled_max=tiled_max)
    return dev


def _gemms(nodes):
    return [n for n in ir.toposort(nodes) if n.op == "GEMM"]


def _r(rng, *shape):
    x = rng.uniform(-1, 1, size=shape)
    x[np.abs(x) < 1e-3] = 0.5
    return x.astype(np.float32)


def _close(got, want):
    """float32 against float64: relative, with an absolute floor at the values' scale."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def _check_conv_against_torch(x, w, out, xt, wt):
    """out = conv2d(xt, wt, padding=1) after (out * out).sum().backward(): its value and
    both gradients against torch in float64."""
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    to = torch.nn.functional.conv2d(tx, tw, padding=1)
    (to * to).sum().backward()
    _close(out.numpy(), to.detach().numpy())
    _close(wt.grad.numpy(), tw.grad.numpy())
    _close(xt.grad.numpy(), tx.grad.numpy())


def test_user_graph_is_device_neutral(rng):
    x = engine.tensor(_r(rng, 5, 7), requires_grad=True)
    w = engine.tensor(_r(rng, 7, 3), requires_grad=True)
    img = engine.tensor(_r(rng, 2, 3, 6, 6))
    k = engine.tensor(_r(rng, 4, 3, 3, 3), requires_grad=True)
    loss = (x @ w).relu().sum() + F.conv2d(img, k, padding=1).sum()
    grads = engine.autograd.grad(loss, [x, w, k])
    nodes = ir.toposort([loss.node] + [g.node for g in grads])
    mats = [n for n in nodes if n.op == "MATMUL"]
    assert len(mats) >= 4 and not _gemms(nodes)
    assert all(n.arg is None and n.srcs[0].shape[-1] == n.srcs[1].shape[-2] for n in mats)
    ir.verify(nodes)
    # the same neutral node whatever device it will run on: nothing device-shaped in it
    a, b = ir.buffer((64, 32)), ir.buffer((32, 16))
    assert ir.matmul(a, b).srcs == (a, b) and ir.matmul(a, b) is ir.matmul(a, b)


def test_cpu_and_gpu_lowerings_differ():
    a, b = ir.buffer((100, 48)), ir.buffer((48, 40))
    out = ir.matmul(a, b)
    (cpu,) = lowering.lower([out], _Desc("cpu", 2))
    (gpu,) = lowering.lower([out], _Desc("gpu", 2, tiled_max=64))
    (gc,), (gg,) = _gemms([cpu]), _gemms([gpu])
    M, N, K, R_cpu, _ = gc.arg
    assert (M, N, K) == (100, 40, 48) and gg.arg[:3] == (100, 40, 48)
    assert R_cpu == 0 and gc.srcs[0] is a                   # a CPU streams A's rows in place
    assert gg.arg[3] == 64 and gg.srcs[0].shape == (2, 48, 64)   # a GPU packs A into 64-row panels
    assert gc.srcs[1].shape[-1] != gg.srcs[1].shape[-1]     # B panels as wide as each device's tile
    assert cpu.shape == gpu.shape == (100, 40)


def test_conv_im2col_is_read_in_place_but_a_gpu_packs_its_transpose():
    x, w, g = ir.buffer((2, 3, 8, 8)), ir.buffer((3 * 9, 4)), ir.buffer((2 * 36, 4))
    win = ir.window(x, (3, 3), (1, 1))                              # [2, 3, 6, 6, 3, 3]
    cols = ir.reshape(ir.permute(win, (0, 2, 3, 1, 4, 5)), (72, 27))
    fwd, wgrad = ir.matmul(cols, w), ir.matmul(ir.permute(cols, (1, 0)), g)
    for desc in (_Desc("cpu", 2), _Desc("gpu", 1)):
        (f,), (wg,) = _gemms(lowering.lower([fwd], desc)), _gemms(lowering.lower([wgrad], desc))
        assert f.arg[3] == 0 and f.srcs[0] is cols                  # implicit GEMM: never stored
        assert (wg.arg[3] > 0) == (desc.kind == "gpu")              # strided rows: packed on a GPU


def test_split_k_is_chosen_for_skinny_long_contractions():
    gpu, cpu = _Desc("gpu", 132), _Desc("cpu", 2)
    # the conv 3x3 64->64 weight gradient at 32x32, batch 64: cols^T [576, 65536] @ dout [65536, 64]
    assert lowering.split_k(576, 64, 65536, 1, (128, 128), True, gpu) == 64
    # the 1024 x 10 logits layer of a wide MLP: forward and its weight gradient
    assert lowering.split_k(1024, 10, 4096, 1, (128, 128), True, gpu) == 16
    # enough tiles already, or K too short: one pass
    assert lowering.split_k(4096, 10, 1024, 1, (128, 128), True, gpu) == 1
    assert lowering.split_k(128, 10, 512, 1, (64, 64), True, gpu) == 1
    assert lowering.split_k(4096, 4096, 4096, 1, (128, 128), True, gpu) == 1
    assert lowering.split_k(1024, 10, 300, 1, (128, 128), True, gpu) == 1
    assert lowering.split_k(576, 64, 8192, 1, (8, 32), False, cpu) == 1
    a, b = ir.buffer((576, 65536)), ir.buffer((65536, 64))
    (out,) = lowering.lower([ir.matmul(a, b)], gpu)
    (gm,) = _gemms([out])
    assert out.shape == (576, 64) and out.srcs[0].op == "SUM" and out.srcs[0].srcs[0] is gm
    S = lowering.split_k(576, 64, 65536, 1, (gm.arg[3], gm.srcs[1].shape[-1]), True, gpu)   # the tile tune chose
    assert S >= 16 and gm.shape == (S, 576, 64) and gm.arg[2] == 65536 // S


@pytest.mark.parametrize("kind,units", [("cpu", 16), ("gpu", 64)])
def test_split_k_matmul_forward_backward_matches_float64(rng, kind, units):
    dev = _device_as(kind, units)
    x64, w64, b64 = (rng.uniform(-1, 1, s) for s in ((24, 4096), (4096, 10), (10,)))
    x = engine.tensor(x64.astype(np.float32), device=dev, requires_grad=True)
    w = engine.tensor(w64.astype(np.float32), device=dev, requires_grad=True)
    b = engine.tensor(b64.astype(np.float32), device=dev, requires_grad=True)
    out = x @ w + b
    (low,) = lowering.lower([out.node], dev)
    assert any(len(g.shape) == 3 and g.shape[0] > 1 for g in _gemms([low]))    # split along K
    loss = (out * out).sum()
    loss.backward()
    xf, wf = x64.astype(np.float32).astype(np.float64), w64.astype(np.float32).astype(np.float64)
    ref = xf @ wf + b64.astype(np.float32)
    _close(out.numpy(), ref)
    _close(w.grad.numpy(), xf.T @ (2 * ref))
    _close(x.grad.numpy(), (2 * ref) @ wf.T)
    _close(b.grad.numpy(), (2 * ref).sum(0))


@pytest.mark.parametrize("kind,units", [("cpu", 2), ("gpu", 64)])
def test_conv_weight_gradient_matches_torch(rng, kind, units):
    dev = _device_as(kind, units)
    x, w = _r(rng, 16, 16, 12, 12), _r(rng, 16, 16, 3, 3)
    xt, wt = engine.tensor(x, device=dev, requires_grad=True), engine.tensor(w, device=dev, requires_grad=True)
    out = F.conv2d(xt, wt, padding=1)
    loss = (out * out).sum()
    wgrads = [n for n in ir.toposort([engine.autograd.grad(loss, [wt], retain_graph=True)[0].node]) if n.op == "MATMUL"]
    split = [g for g in _gemms(lowering.lower(wgrads, dev)) if len(g.shape) == 3]
    assert bool(split) == (kind == "gpu")    # 5 output tiles on 64 units: split; 18 on 2 CPU cores: not
    loss.backward()
    _check_conv_against_torch(x, w, out, xt, wt)


def test_training_steps_after_updates_stay_correct(rng):
    """Mutate, step, evaluate again: the split-K plan is re-used over new parameter
    buffers and still matches a float64 numpy run of the same SGD steps."""
    dev = _device_as("gpu", 64)
    x64, w64, y64 = rng.uniform(-1, 1, (16, 2048)), rng.uniform(-0.1, 0.1, (2048, 10)), rng.uniform(-1, 1, (16, 10))
    xf = x64.astype(np.float32).astype(np.float64)
    w_ref = w64.astype(np.float32).astype(np.float64)
    x, y = engine.tensor(x64.astype(np.float32), device=dev), engine.tensor(y64.astype(np.float32), device=dev)
    w = engine.tensor(w64.astype(np.float32), device=dev, requires_grad=True)
    opt = engine.optim.SGD([w], lr=0.01)
    with engine.no_grad():
        w.mul_(0.5)                 # an in-place write before the first step
    w_ref *= 0.5
    for _ in range(3):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        d = xf @ w_ref - y64.astype(np.float32)
        assert abs(loss.item() - (d * d).mean()) < 1e-4 * max(1.0, (d * d).mean())
        _close(w.grad.numpy(), xf.T @ (2 * d / d.size))
        opt.step()
        w_ref -= 0.01 * (xf.T @ (2 * d / d.size))
    _close(w.numpy(), w_ref)


def test_plans_are_kept_per_device(rng):
    from engine import realize
    a, b = _r(rng, 40, 1024), _r(rng, 1024, 10)
    cpu, gpu = _device_as("cpu", 2), _device_as("gpu", 64)
    outs = {}
    for dev in (cpu, gpu, cpu):
        out = engine.tensor(a, device=dev) @ engine.tensor(b, device=dev)
        outs.setdefault(dev.kind, []).append(realize.plan([out.node], dev))
    (c1, c2), (g1,) = outs["cpu"], outs["gpu"]
    assert [s.name for _, s in c1] == [s.name for _, s in c2]
    assert {s.template for _, s in g1} != {s.template for _, s in c1}


def test_step_programs_carry_neutral_matmuls_and_refuse_gemm():
    doc = {"format": "many-as-one/step", "v": 1, "outputs": [2], "param_names": ["w"], "param_shapes": [[4, 3]],
           "nodes": [{"op": "BUFFER", "srcs": [], "shape": [5, 4], "dtype": "float32", "input": "x"},
                     {"op": "BUFFER", "srcs": [], "shape": [4, 3], "dtype": "float32", "input": "param:0"},
                     {"op": "MATMUL", "srcs": [0, 1], "shape": [5, 3], "dtype": "float32"}]}
    check_program(doc)
    bad = dict(doc, nodes=doc["nodes"][:2] + [dict(doc["nodes"][2], op="GEMM", arg=[5, 3, 4, 0, []])])
    with pytest.raises(ProgramInvalid, match="unknown op 'GEMM'"):
        check_program(bad)
    misfit = dict(doc, nodes=doc["nodes"][:2] + [dict(doc["nodes"][2], srcs=[1, 0])])
    with pytest.raises(ProgramInvalid, match="do not fit"):
        check_program(misfit)


def test_a_forced_tile_is_not_served_a_remembered_plan(rng):
    """engine tune times each candidate tile on the same graph: the plan must follow it."""
    from engine import realize, tune
    dev = engine.default_device()
    a, b = _r(rng, 40, 64), _r(rng, 64, 48)

    def widths():
        out = engine.tensor(a, device=dev) @ engine.tensor(b, device=dev)
        return [s.display.get("W", s.display.get("TN")) for _, s in realize.plan([out.node], dev)
                if s.template.startswith("gemm")]
    first = widths()
    with tune.override(*((16, 16) if dev.kind == "gpu" else (8, 16))):
        assert widths() == [16] != first
    assert widths() == first


@pytest.mark.parametrize("kind,units", [("cpu", 2), ("gpu", 64)])
def test_explain_shows_the_users_graph_with_every_kernel_in_it(rng, kind, units):
    """The UI draws each kernel around the nodes it computes: the user's MATMULs sit in
    their GEMM kernels and the lowering's panels and split-K sums appear as extra nodes."""
    dev = _device_as(kind, units)
    model = engine.nn.Sequential(engine.nn.Conv2d(2, 4, 3, device=dev), engine.nn.ReLU(), engine.nn.Flatten(),
                                 engine.nn.Linear(4 * 36, 10, device=dev))
    x, y = engine.tensor(_r(rng, 16, 2, 8, 8), device=dev), engine.tensor(rng.integers(0, 10, 16), device=dev)
    d = engine.explain(lambda a, b: F.cross_entropy(model(a), b), x, y, backward=True).to_json()
    ids = {n["id"] for n in d["nodes"]}
    owned = {n["kernel"] for n in d["nodes"]}
    assert all(k["index"] in owned and set(k["fused_ops"]) <= ids for k in d["kernels"])
    mats = [n for n in d["nodes"] if n["op"] == "MATMUL"]
    gemm_kernels = {k["index"] for k in d["kernels"] if k["template"].startswith("gemm")}
    assert mats and all(n["kernel"] in gemm_kernels for n in mats)
    assert "GEMM" not in {n["op"] for n in d["nodes"]}


@pytest.mark.parametrize("kind,units", [("cpu", 16), ("gpu", 64)])
def test_implicit_gemm_split_along_k_matches_torch(rng, kind, units):
    """Many channels, few pixels: the forward conv's im2col A (read through its window
    view) is split along K too, its K padded with zeros inside the view."""
    dev = _device_as(kind, units)
    x, w = _r(rng, 2, 256, 4, 4), _r(rng, 64, 256, 3, 3)
    xt, wt = engine.tensor(x, device=dev, requires_grad=True), engine.tensor(w, device=dev, requires_grad=True)
    out = F.conv2d(xt, wt, padding=1)
    (gm,) = _gemms(lowering.lower([out.node], dev))
    assert gm.arg[3] == 0 and len(gm.shape) == 3 and gm.shape[0] > 1     # implicit A, split along K
    (out * out).sum().backward()
    _check_conv_against_torch(x, w, out, xt, wt)


def test_split_settings_changed_at_run_time_are_planned_anew(rng, monkeypatch):
    """bench/lowering.py compares split-K on and off in one process: the plan cache must
    see the setting (it keys on lowering.device_key)."""
    from engine import realize
    dev = _device_as("gpu", 64)
    a, b = _r(rng, 40, 4096), _r(rng, 4096, 10)

    def kernels():
        out = engine.tensor(a, device=dev) @ engine.tensor(b, device=dev)
        return [s.template for _, s in realize.plan([out.node], dev)]
    split = kernels()
    monkeypatch.setattr(lowering, "FILL", 0)
    assert len(kernels()) == len(split) - 1          # no split-K sum


def test_split_k_sum_absorbs_the_epilogue(rng):
    """x @ w + b split along K is the GEMM of the slices and one reduce that adds the bias
    (the sum's [1, M, N] is read as [M, N] through a reshape the reduce absorbs)."""
    dev = _device_as("gpu", 64)
    x64, w64, b64 = rng.uniform(-1, 1, (40, 4096)), rng.uniform(-1, 1, (4096, 10)), rng.uniform(-1, 1, 10)
    x, w, b = (engine.tensor(v.astype(np.float32), device=dev) for v in (x64, w64, b64))
    with engine.profile() as p:
        out = ((x @ w + b).relu()).realize()
    kinds = [k["template"] for k in p.kernels]
    assert kinds.count("elementwise") == 0 or all(
        set(k["fused_ops"]) <= {"RESHAPE", "PERMUTE", "PAD", "EXPAND"} for k in p.kernels if k["template"] == "elementwise")
    (red,) = [k for k in p.kernels if k["template"].startswith("reduce")]
    assert {"ADD", "RELU"} <= set(red["fused_ops"])
    xf, wf = (v.astype(np.float32).astype(np.float64) for v in (x64, w64))
    _close(out.numpy(), np.maximum(xf @ wf + b64.astype(np.float32), 0))


def test_a_squeezed_reduction_and_its_epilogue_are_one_kernel(rng):
    x64 = rng.uniform(0.5, 1.5, (6, 50))
    x = engine.tensor(x64.astype(np.float32))
    with engine.profile() as p:
        out = (x.sum(1) * 0.02).exp().realize()
    assert [k["template"] for k in p.kernels] in (["reduce"], ["reduce_group"])
    _close(out.numpy(), np.exp(x64.astype(np.float32).astype(np.float64).sum(1) * 0.02))
