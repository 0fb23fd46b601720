"""The scheduler's promises, pinned by counting launches with engine.profile(), and the
IR's checks (pure, no device needed for those)."""
import numpy as np
import pytest

import engine
from engine import ir
from engine.nn import functional as F


def _t(rng, *shape, grad=False):
    return engine.tensor(rng.uniform(0.5, 1.5, size=shape).astype(np.float32), requires_grad=grad)


def count(fn):
    with engine.profile() as p:
        out = fn()
        if isinstance(out, engine.Tensor):
            out.realize()
    return p.kernels


def test_elementwise_chain_is_one_kernel(rng):
    a, b, c = _t(rng, 5, 7), _t(rng, 5, 7), _t(rng, 7)
    ks = count(lambda: ((a + b) * c).exp().sqrt() - a / 3.0)
    assert len(ks) == 1 and ks[0]["template"] == "elementwise"


MOVES = {"RESHAPE", "PERMUTE", "PAD", "EXPAND", "SHRINK"}
PACKED_OPERANDS = 2 if engine.default_device().kind == "gpu" else 1


def test_linear_relu_is_one_gemm_kernel(rng):
    x, w, b = _t(rng, 9, 13), _t(rng, 13, 6), _t(rng, 6)
    ks = count(lambda: (x @ w + b).relu())
    gemms = [k for k in ks if k["template"].startswith("gemm")]
    assert len(gemms) == 1 and {"ADD", "RELU", "GEMM"} <= set(gemms[0]["fused_ops"])
    # the other kernels only lay operands out as panels (B; on a GPU also A): no arithmetic
    others = [k for k in ks if not k["template"].startswith("gemm")]
    assert len(others) == PACKED_OPERANDS and all(set(k["fused_ops"]) <= MOVES for k in others), others


def test_transposed_operand_is_packed_in_the_same_copy(rng):
    x, w = _t(rng, 9, 13), _t(rng, 6, 13)
    ks = count(lambda: (x @ w.T).sigmoid())
    assert sum(k["template"].startswith("gemm") for k in ks) == 1 and len(ks) == 1 + PACKED_OPERANDS


def test_reduce_absorbs_its_elementwise_input(rng):
    x, y = _t(rng, 8, 5), _t(rng, 8, 5)
    ks = count(lambda: ((x - y) * (x - y)).exp().sum(1))
    assert len(ks) == 1 and ks[0]["template"] == "reduce"


def test_views_cost_nothing(rng):
    x = _t(rng, 4, 6)
    ks = count(lambda: x.T.reshape(3, 8)[1:, ::2] * 2.0)
    assert len(ks) == 1


def test_softmax_kernels(rng):
    x = _t(rng, 4, 10)
    ks = count(lambda: x.softmax(1))
    # max-reduce, then exp-sum reduce (with the exp fused), then the normalising division
    assert [k["template"] for k in ks] == ["reduce", "reduce", "elementwise"]


def test_optimizer_update_is_one_kernel_per_parameter(rng):
    model = engine.nn.Linear(5, 3)
    for opt in (engine.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), engine.optim.Adam(model.parameters())):
        F.mse_loss(model(_t(rng, 4, 5)), _t(rng, 4, 3)).backward()
        with engine.profile() as p:
            opt.step()
        assert len(p.kernels) == 2, [k["name"] for k in p.kernels]


def test_updates_of_parameters_that_differ_only_in_length_are_one_kernel(rng):
    """A contiguous elementwise kernel launched with exactly its length in work-items names
    no length (codegen): the update of a [64, 32] weight, of a [2048] bias and of a [10]
    bias is one kernel, built once, launched three times, and each parameter gets its own
    numbers (float64 reference over two steps, with momentum)."""
    shapes = [(64, 32), (2048,), (10,)]
    ps = [engine.tensor(rng.uniform(-1, 1, size=s).astype(np.float32), requires_grad=True) for s in shapes]
    ref = [p.numpy().astype(np.float64) for p in ps]
    bufs = [np.zeros_like(r) for r in ref]
    opt = engine.optim.SGD(ps, lr=0.1, momentum=0.9)
    for step in range(2):
        gs = [rng.uniform(0.5, 1.5, size=s).astype(np.float32) for s in shapes]
        for p, g in zip(ps, gs):
            p.grad = engine.tensor(g)
        with engine.profile() as prof:
            opt.step()
        for i, g in enumerate(gs):
            bufs[i] = 0.9 * bufs[i] + g if step else g.astype(np.float64)
            ref[i] = ref[i] - 0.1 * bufs[i]
        assert len(prof.kernels) == 3 and len({k["name"] for k in prof.kernels}) == 1, \
            [k["name"] for k in prof.kernels]
        for p, r in zip(ps, ref):
            np.testing.assert_allclose(p.numpy(), r, rtol=1e-5, atol=1e-6)


def test_bad_shapes_fail_at_the_users_line_with_both_shapes(rng):
    a, b = _t(rng, 3, 4), _t(rng, 5, 6)
    with pytest.raises(engine.ShapeError, match=r"\(3, 4\).*\(5, 6\)"):
        a @ b
    with pytest.raises(engine.ShapeError, match=r"\(3, 4\).*\(5, 6\)"):
        a + b
    with pytest.raises(engine.ShapeError, match="cannot view shape"):
        a.reshape(5, 3)
    with pytest.raises(engine.ShapeError, match="channels"):
        F.conv2d(_t(rng, 1, 2, 5, 5), _t(rng, 4, 3, 3, 3))


def test_ir_nodes_are_interned_and_verified():
    x = ir.buffer((3, 4))
    assert ir.unary("EXP", x) is ir.unary("EXP", x)
    y = ir.binary("ADD", ir.unary("EXP", x), ir.const(1.0, (3, 4)))
    ir.verify([ir.reduce("SUM", y, (1,))])
    with pytest.raises(AttributeError):
        y.op = "MUL"


def test_explain_lists_kernels_without_running(rng):
    model = engine.nn.Sequential(engine.nn.Linear(6, 4), engine.nn.ReLU(), engine.nn.Linear(4, 3))
    x = _t(rng, 2, 6)
    with engine.profile() as p:
        ex = engine.explain(model, x)
    assert len(p.kernels) == 0
    d = ex.to_json()
    assert len(d["kernels"]) >= 2 and all("__kernel" in k["source"] for k in d["kernels"])
    assert any(n["op"] == "MATMUL" and n["kernel"] is not None for n in d["nodes"])
    assert any(n["scope"].endswith(".0") for n in d["nodes"])


def test_training_step_keeps_bias_and_relu_in_the_gemm(rng):
    """In a whole training step (forward + backward), each hidden layer's GEMM still
    carries its bias and ReLU: the backward pass reads the mask from the stored output."""
    model = engine.nn.Sequential(engine.nn.Linear(12, 16), engine.nn.ReLU(), engine.nn.Linear(16, 4))
    x, y = _t(rng, 8, 12), engine.tensor(rng.integers(0, 4, 8))
    with engine.profile() as p:
        F.cross_entropy(model(x), y).backward()
    fused = [set(k["fused_ops"]) for k in p.kernels if k["template"].startswith("gemm")]
    assert {"GEMM", "ADD", "RELU"} in [f & {"GEMM", "ADD", "RELU"} for f in fused]


def test_where_with_a_constant_condition_writes_a_bool_literal(rng):
    """NVIDIA's compiler rejects a float literal as a ?: condition (PoCL accepts it)."""
    x = _t(rng, 3, 4)
    cond = engine.Tensor(ir.const(True, (3, 4), "bool"), x.device)
    ex = engine.explain(lambda: cond.where_(x, -1.0))
    src = ex.to_json()["kernels"][0]["source"]
    assert "1 ?" in src and "1.0f ?" not in src
    np.testing.assert_array_equal(cond.where_(x, -1.0).numpy(), x.numpy())
