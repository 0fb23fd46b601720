"""engine.ops and engine.dtypes against PyTorch: forward values and gradients on random
non-zero inputs with odd, prime and size-1 dims (torch in float64 is the reference)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import engine  # noqa: E402
from engine import ops, dtypes  # noqa: E402


def _inp(rng, shape, positive=False, distinct=False):
    x = rng.uniform(-2, 2, size=shape)
    if positive:
        x = np.abs(x) + 0.5
    x[np.abs(x) < 1e-2] = 0.5
    if distinct:   # sort/topk: no ties
        flat = rng.permutation(x.size).astype(np.float64) * 0.37 - x.size * 0.15
        x = flat.reshape(shape)
    return x.astype(np.float32)


def compare(fe, ft, inputs, grad=True, rtol=1e-5, atol=1e-6, grad_rtol=1e-5, grad_atol=1e-6):
    """fe(*engine tensors) and ft(*torch float64 tensors) must agree, and so must the
    gradients of sum(out * w) for a fixed random w (float outputs only)."""
    float_in = [isinstance(x, np.ndarray) and x.dtype == np.float32 for x in inputs]
    te = [engine.tensor(x, requires_grad=grad and f) if isinstance(x, np.ndarray) else x
          for x, f in zip(inputs, float_in)]
    tt = [torch.tensor(x.astype(np.float64) if f else x, requires_grad=grad and f) if isinstance(x, np.ndarray) else x
          for x, f in zip(inputs, float_in)]
    oe, ot = fe(*te), ft(*tt)
    if isinstance(ot, (tuple, list)):
        assert len(oe) == len(ot)
        pairs = list(zip(oe, ot))
    else:
        pairs = [(oe, ot)]
    for e, t in pairs:
        got, want = e.numpy(), t.detach().numpy()
        assert got.shape == want.shape, f"shape {got.shape} != torch {want.shape}"
        if want.dtype.kind in "biu":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if not grad or not any(float_in):
        return
    rng = np.random.default_rng(5)
    le, lt = 0, 0
    for e, t in pairs:
        if not t.dtype.is_floating_point:
            continue
        w = rng.uniform(0.5, 1.5, size=t.shape)
        le = le + (e * engine.tensor(w.astype(np.float32))).sum()
        lt = lt + (t * torch.tensor(w)).sum()
    if not isinstance(le, engine.Tensor):   # integer outputs only
        return
    lt.backward()
    if not getattr(le, "requires_grad", False):   # no gradient path (floor, round...): torch's is zero
        for t in tt:
            if isinstance(t, torch.Tensor) and t.grad is not None:
                assert not t.grad.abs().max() > 0
        return
    le.backward()
    for i, (e, t) in enumerate(zip(te, tt)):
        if not float_in[i]:
            continue
        tg = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        eg = e.grad.numpy() if e.grad is not None else np.zeros(t.shape)
        np.testing.assert_allclose(eg, tg, rtol=grad_rtol, atol=grad_atol, err_msg=f"gradient of input {i}")


S = (3, 7)        # the shared shapes (kernels compiled once per shape)
S3 = (2, 5, 1)


UNARY = [
    ("exp", ops.exp, torch.exp, {}), ("log", ops.log, torch.log, {"positive": True}),
    ("log2", ops.log2, torch.log2, {"positive": True}), ("log10", ops.log10, torch.log10, {"positive": True}),
    ("log1p", ops.log1p, torch.log1p, {"positive": True}), ("expm1", ops.expm1, torch.expm1, {}),
    ("sqrt", ops.sqrt, torch.sqrt, {"positive": True}), ("rsqrt", ops.rsqrt, torch.rsqrt, {"positive": True}),
    ("abs", ops.abs, torch.abs, {}), ("neg", ops.neg, torch.neg, {}), ("square", ops.square, torch.square, {}),
    ("tanh", ops.tanh, torch.tanh, {}), ("sigmoid", ops.sigmoid, torch.sigmoid, {}),
    ("relu", ops.relu, torch.relu, {}), ("erf", ops.erf, torch.erf, {}),
    ("reciprocal", ops.reciprocal, torch.reciprocal, {}),
    ("floor", ops.floor, torch.floor, {}), ("ceil", ops.ceil, torch.ceil, {}), ("trunc", ops.trunc, torch.trunc, {}),
    ("round", ops.round, torch.round, {}), ("frac", ops.frac, torch.frac, {}), ("sign", ops.sign, torch.sign, {}),
    ("clamp", lambda x: ops.clamp(x, -0.5, 1.2), lambda x: torch.clamp(x, -0.5, 1.2), {}),
    ("clamp_min", lambda x: ops.clamp(x, min=0.3), lambda x: torch.clamp(x, min=0.3), {}),
    ("clamp_max", lambda x: ops.clamp(x, max=0.3), lambda x: torch.clamp(x, max=0.3), {}),
    ("pow_neg_int", lambda x: ops.pow(x, -2), lambda x: torch.pow(x, -2), {}),
    ("pow_int", lambda x: ops.pow(x, 3), lambda x: torch.pow(x, 3), {}),
    ("pow_frac", lambda x: ops.pow(x, 1.5), lambda x: torch.pow(x, 1.5), {"positive": True}),
    ("rpow", lambda x: ops.pow(2.0, x), lambda x: torch.pow(2.0, x), {}),
]


def _stacked(fs):
    """Several ops in one graph (one stacked output): they fuse into few kernels, which
    keeps the kernel builds of this file down; each op is still compared elementwise."""
    return lambda x: engine.stack([f(x) for f in fs]) if hasattr(x, "node") else torch.stack([f(x) for f in fs])


@pytest.mark.parametrize("positive", [False, True], ids=["any_sign", "positive"])
def test_unary(rng, positive):
    group = [u for u in UNARY if bool(u[3].get("positive")) == positive]
    x = _inp(rng, S, positive=positive)
    fe = _stacked([u[1] for u in group])
    ft = _stacked([u[2] for u in group])
    compare(lambda t: fe(t), lambda t: ft(t), [x], rtol=2e-5, grad_rtol=2e-5)


def test_pow_tensor_exponent_and_negative_base(rng):
    a = _inp(rng, S)
    b = rng.integers(-3, 4, size=S).astype(np.float32)
    b[0, :3] = [0.5, 1.5, 2.5]
    compare(ops.pow, torch.pow, [a, b], grad=False, rtol=2e-5)
    compare(ops.pow, torch.pow, [_inp(rng, S, positive=True), _inp(rng, S)], rtol=2e-5, grad_rtol=2e-5)


def test_clamp_tensor_bounds(rng):
    compare(lambda x, lo, hi: ops.clamp(x, lo, hi), lambda x, lo, hi: torch.clamp(x, lo, hi),
            [_inp(rng, S), _inp(rng, (1, 7)) - 1, _inp(rng, (3, 1)) + 1])


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, True)])
def test_std_var(rng, dim, keepdim):
    x = _inp(rng, S)
    compare(lambda t: ops.std(t, dim, keepdim=keepdim), lambda t: torch.std(t, dim, keepdim=keepdim), [x])
    compare(lambda t: ops.var(t, dim, keepdim=keepdim, correction=0),
            lambda t: torch.var(t, dim, keepdim=keepdim, correction=0), [x])


@pytest.mark.parametrize("dim", [0, -1])
def test_cumsum_cumprod(rng, dim):
    x = _inp(rng, S)
    compare(lambda t: ops.cumsum(t, dim), lambda t: torch.cumsum(t, dim), [x], rtol=2e-5, grad_rtol=2e-5)
    compare(lambda t: ops.cumprod(t, dim), lambda t: torch.cumprod(t, dim), [x], rtol=2e-5, grad_rtol=2e-5)
    i = rng.integers(-5, 6, size=S)
    compare(lambda t: ops.cumsum(t, dim), lambda t: torch.cumsum(t, dim), [i], grad=False)


@pytest.mark.parametrize("dim,descending", [(1, False), (0, True)])
def test_sort_argsort(rng, dim, descending):
    x = _inp(rng, S, distinct=True)
    compare(lambda t: tuple(ops.sort(t, dim, descending)), lambda t: tuple(torch.sort(t, dim, descending)), [x])
    compare(lambda t: ops.argsort(t, dim, descending), lambda t: torch.argsort(t, dim, descending), [x])


def test_sort_stable_ties():
    x = np.array([[2, 1, 2, 1, 3, 1, 2]], np.float32)
    compare(lambda t: tuple(ops.sort(t, 1, stable=True)), lambda t: tuple(torch.sort(t, dim=1, stable=True)), [x])


@pytest.mark.parametrize("k,dim,largest", [(3, 1, True), (1, 0, False)])
def test_topk(rng, k, dim, largest):
    x = _inp(rng, S, distinct=True)
    compare(lambda t: tuple(ops.topk(t, k, dim, largest)), lambda t: tuple(torch.topk(t, k, dim, largest)), [x])


def test_max_min_with_dim_return_values_and_indices(rng):
    x = _inp(rng, S, distinct=True)
    compare(lambda t: tuple(ops.max(t, 1)), lambda t: tuple(torch.max(t, 1)), [x])
    compare(lambda t: tuple(ops.min(t, 0, keepdim=True)), lambda t: tuple(torch.min(t, 0, keepdim=True)), [x])
    compare(lambda t: ops.max(t), lambda t: torch.max(t), [x])
    compare(lambda t: ops.min(t), lambda t: torch.min(t), [x])
    v, i = ops.max(engine.tensor(x), 1)           # unpacks into values and indices
    assert v.shape == (3,) and i.dtype == dtypes.long
    compare(lambda t: ops.argmax(t, 1), lambda t: torch.argmax(t, 1), [x])
    compare(lambda t: ops.argmin(t), lambda t: torch.argmin(t), [x])
    a, b = _inp(rng, S), _inp(rng, S)
    compare(ops.max, torch.max, [a, b])


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(3, 7), (7, 5)]), ("bij,bjk->bik", [(2, 3, 7), (2, 7, 1)]), ("ij->ji", [(3, 7)]),
    ("bhqd,bhkd->bhqk", [(2, 1, 3, 5), (2, 1, 7, 5)]), ("...ij,...jk", [(2, 3, 7), (2, 7, 5)]),
    ("ij,jk,kl->il", [(3, 7), (7, 5), (5, 2)]),
])
def test_einsum(rng, eq, shapes):
    compare(lambda *t: ops.einsum(eq, *t), lambda *t: torch.einsum(eq, *t), [_inp(rng, s) for s in shapes],
            rtol=2e-5, grad_rtol=2e-5)


def test_bmm_mm_outer(rng):
    compare(ops.bmm, torch.bmm, [_inp(rng, (2, 3, 7)), _inp(rng, (2, 7, 5))], rtol=2e-5, grad_rtol=2e-5)
    compare(ops.mm, torch.mm, [_inp(rng, (3, 7)), _inp(rng, (7, 5))], rtol=2e-5, grad_rtol=2e-5)
    compare(ops.outer, torch.outer, [_inp(rng, (3,)), _inp(rng, (7,))])
    with pytest.raises(engine.ShapeError):
        ops.bmm(engine.ones(2, 3, 4), engine.ones(3, 4, 5))


@pytest.mark.parametrize("dim", [0, 1])
def test_gather(rng, dim):
    x = _inp(rng, S)
    idx = rng.integers(0, S[dim], size=(2, 5) if dim == 0 else (3, 4))
    compare(lambda t: ops.gather(t, dim, engine.tensor(idx)), lambda t: torch.gather(t, dim, torch.tensor(idx)), [x])
    with pytest.raises(IndexError, match="out of bounds"):
        ops.gather(engine.tensor(x), dim, engine.tensor(idx + 10))


@pytest.mark.parametrize("dim", [0, 1])
def test_index_select(rng, dim):
    x = _inp(rng, S)
    idx = np.array([2, 0, 2, 1]) if dim == 0 else np.array([6, 0, 3])
    compare(lambda t: ops.index_select(t, dim, engine.tensor(idx)),
            lambda t: torch.index_select(t, dim, torch.tensor(idx)), [x])


def test_scatter_and_scatter_add(rng):
    x, src = _inp(rng, S), _inp(rng, (2, 7))
    idx = np.stack([rng.permutation(3)[:2] for _ in range(7)], 1)   # unique per column
    compare(lambda a, s: ops.scatter(a, 0, engine.tensor(idx), s),
            lambda a, s: torch.scatter(a, 0, torch.tensor(idx), s), [x, src])
    idx2 = rng.integers(0, 3, size=(2, 7))
    compare(lambda a, s: ops.scatter_add(a, 0, engine.tensor(idx2), s),
            lambda a, s: torch.scatter_add(a, 0, torch.tensor(idx2), s), [x, src])
    idx3 = rng.integers(0, 7, size=(3, 2))
    compare(lambda a: ops.scatter(a, 1, engine.tensor(np.sort(idx3, 1) * 0 + np.array([[0, 4]])), value=2.5),
            lambda a: torch.scatter(a, 1, torch.tensor(np.sort(idx3, 1) * 0 + np.array([[0, 4]])), 2.5), [x])


def test_split_chunk_unbind_narrow(rng):
    x = _inp(rng, S)
    compare(lambda t: ops.split(t, 3, 1), lambda t: torch.split(t, 3, 1), [x])
    compare(lambda t: ops.split(t, [1, 2], 0), lambda t: torch.split(t, [1, 2], 0), [x])
    compare(lambda t: ops.chunk(t, 3, 1), lambda t: torch.chunk(t, 3, 1), [x])
    compare(lambda t: ops.unbind(t, 0), lambda t: torch.unbind(t, 0), [x])
    compare(lambda t: ops.narrow(t, 1, 2, 4), lambda t: torch.narrow(t, 1, 2, 4), [x])


@pytest.mark.parametrize("diagonal", [1, -2])
def test_tril_triu(rng, diagonal):
    x = _inp(rng, (2, 3, 7))
    compare(lambda t: ops.tril(t, diagonal), lambda t: torch.tril(t, diagonal), [x])
    compare(lambda t: ops.triu(t, diagonal), lambda t: torch.triu(t, diagonal), [x])
    m = np.ones((5, 5), bool)
    np.testing.assert_array_equal(ops.tril(engine.tensor(m), diagonal).numpy(), torch.tril(torch.tensor(m), diagonal).numpy())


def test_diag_flip_roll_repeat(rng):
    x = _inp(rng, S)
    compare(lambda t: ops.diag(t), lambda t: torch.diag(t), [x])
    compare(lambda t: ops.diag(t, 2), lambda t: torch.diag(t, 2), [x])
    compare(lambda t: ops.diag(t, -1), lambda t: torch.diag(t, -1), [x])
    compare(lambda t: ops.diag(t, -2), lambda t: torch.diag(t, -2), [_inp(rng, (7,))])
    compare(lambda t: ops.flip(t, (0, 1)), lambda t: torch.flip(t, (0, 1)), [x])
    compare(lambda t: ops.roll(t, 2, 1), lambda t: torch.roll(t, 2, 1), [x])
    compare(lambda t: ops.repeat(t, 2, 1, 3), lambda t: t.repeat(2, 1, 3), [x])
    compare(lambda t: ops.repeat_interleave(t, 2, 1), lambda t: torch.repeat_interleave(t, 2, 1), [x])
    compare(lambda t: ops.tile(t, (2,)), lambda t: torch.tile(t, (2,)), [x])
    compare(ops.t, lambda t: t.t(), [x])


def test_reductions(rng):
    x = _inp(rng, S3)
    compare(lambda t: ops.prod(t, 1), lambda t: torch.prod(t, 1), [x], rtol=2e-5, grad_rtol=2e-5)
    compare(lambda t: ops.prod(t), lambda t: torch.prod(t), [x], rtol=2e-5, grad_rtol=2e-5)
    compare(lambda t: ops.logsumexp(t, 1), lambda t: torch.logsumexp(t, 1), [x])
    compare(lambda t: ops.norm(t), lambda t: torch.norm(t), [x])
    compare(lambda t: ops.norm(t, 1, dim=1), lambda t: torch.norm(t, 1, dim=1), [x])
    compare(lambda t: ops.amax(t, (0, 1)), lambda t: torch.amax(t, (0, 1)), [x])
    compare(lambda t: ops.amin(t, 1, True), lambda t: torch.amin(t, 1, True), [x])
    b = x > 0
    compare(lambda t: ops.all(t, 1), lambda t: torch.all(t, 1), [b])
    compare(lambda t: ops.any(t), lambda t: torch.any(t), [b])


def test_isnan_isinf_masked_fill(rng):
    x = _inp(rng, S)
    x[0, 1], x[1, 2], x[2, 3] = np.nan, np.inf, -np.inf
    compare(ops.isnan, torch.isnan, [x], grad=False)
    compare(ops.isinf, torch.isinf, [x], grad=False)
    compare(ops.isfinite, torch.isfinite, [x], grad=False)
    y = _inp(rng, S)
    m = rng.random(S) > 0.5
    compare(lambda t: ops.masked_fill(t, engine.tensor(m), -1e9), lambda t: t.masked_fill(torch.tensor(m), -1e9), [y])
    m2 = rng.random((1, 7)) > 0.5
    compare(lambda t: ops.masked_fill(t, engine.tensor(m2), 0.25), lambda t: t.masked_fill(torch.tensor(m2), 0.25), [y])


def test_logical_and_bitwise_on_bool(rng):
    a, b = rng.random(S) > 0.5, rng.random(S) > 0.5
    for name in ("logical_and", "logical_or", "logical_xor"):
        compare(getattr(ops, name), getattr(torch, name), [a, b], grad=False)
    compare(ops.logical_not, torch.logical_not, [a], grad=False)
    compare(ops.bitwise_and, lambda x, y: x & y, [a, b], grad=False)
    compare(ops.bitwise_or, lambda x, y: x | y, [a, b], grad=False)
    compare(ops.bitwise_xor, lambda x, y: x ^ y, [a, b], grad=False)
    compare(ops.bitwise_not, lambda x: ~x, [a], grad=False)
    x = _inp(rng, S)
    compare(ops.logical_and, torch.logical_and, [x, x > 0.5], grad=False)


def test_integer_floor_divide_remainder(rng):
    a = rng.integers(-20, 21, size=S)
    b = rng.integers(1, 6, size=S) * rng.choice([-1, 1], size=S)
    compare(ops.floor_divide, torch.floor_divide, [a, b], grad=False)
    compare(ops.remainder, torch.remainder, [a, b], grad=False)
    compare(ops.fmod, torch.fmod, [a, b], grad=False)
    compare(lambda x: ops.floor_divide(x, 3), lambda x: torch.floor_divide(x, 3), [a], grad=False)
    compare(lambda x: ops.remainder(x, 4), lambda x: torch.remainder(x, 4), [a], grad=False)
    assert ops.floor_divide(engine.tensor(a), 3).dtype == dtypes.long


def test_float_floor_divide_remainder(rng):
    a, b = _inp(rng, S) * 3, _inp(rng, S)
    compare(ops.floor_divide, torch.floor_divide, [a, b], grad=False)
    compare(ops.remainder, torch.remainder, [a, b], rtol=1e-5, atol=1e-5)
    compare(lambda x, y: ops.div(x, y, rounding_mode="trunc"), lambda x, y: torch.div(x, y, rounding_mode="trunc"),
            [a, b], grad=False)


def test_advanced_indexing(rng):
    x = _inp(rng, (5, 7, 3))
    i = np.array([4, 0, 4, 2])
    j = np.array([[1], [6]])
    cases = [
        (lambda t: ops.getitem(t, engine.tensor(i)), lambda t: t[torch.tensor(i)]),
        (lambda t: ops.getitem(t, (engine.tensor(i), engine.tensor(j))), lambda t: t[torch.tensor(i), torch.tensor(j)]),
        (lambda t: ops.getitem(t, (engine.tensor(i), 2, [0, 2, 1, 1])), lambda t: t[torch.tensor(i), 2, [0, 2, 1, 1]]),
        (lambda t: ops.getitem(t, (engine.tensor(i[:2]), slice(1, 4), np.array([0, 2]))),
         lambda t: t[torch.tensor(i[:2]), 1:4, [0, 2]]),
        (lambda t: ops.getitem(t, (Ellipsis, [2, 0])), lambda t: t[..., [2, 0]]),
    ]
    for fe, ft in cases:
        compare(fe, ft, [x])
    m = x[..., 0] > 0
    compare(lambda t: ops.getitem(t, engine.tensor(m)), lambda t: t[torch.tensor(m)], [x])
    compare(lambda t: ops.masked_select(t, t > 0.5), lambda t: torch.masked_select(t, t > 0.5), [x])
    compare(lambda t: ops.nonzero(t > 0.5), lambda t: torch.nonzero(t > 0.5), [x], grad=False)
    compare(lambda t: ops.getitem(t, (1, slice(None, None, 2))), lambda t: t[1, ::2], [x])


def test_creation():
    assert np.array_equal(ops.eye(3, 5).numpy(), torch.eye(3, 5).numpy())
    assert ops.eye(4, dtype=dtypes.long).dtype == "int64"
    np.testing.assert_allclose(ops.linspace(-1, 2.5, 7).numpy(), torch.linspace(-1, 2.5, 7).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ops.linspace(0, 1, 1).numpy(), torch.linspace(0, 1, 1).numpy())
    x = engine.ones(2, 3)
    f = ops.full_like(x, 7)
    assert f.shape == (2, 3) and f.dtype == "float32" and (f.numpy() == 7).all()
    assert ops.full_like(x, 2, dtype=dtypes.long).dtype == "int64"
    assert ops.empty_like(x).shape == (2, 3) and ops.zeros_like(x, dtype="int32").dtype == "int32"
    engine.manual_seed(0)
    r = ops.randn_like(engine.zeros(200, 50)).numpy()
    assert r.shape == (200, 50) and abs(r.mean()) < 0.05 and abs(r.std() - 1) < 0.05
    u = ops.rand_like(x).numpy()
    assert ((u >= 0) & (u < 1)).all()
    ri = ops.randint(3, 9, (4, 5)).numpy()
    assert ri.dtype == np.int64 and ri.min() >= 3 and ri.max() < 9 and ri.shape == (4, 5)
    assert ops.randint(5, (3,)).numpy().max() < 5
    p = ops.randperm(9).numpy()
    assert sorted(p.tolist()) == list(range(9))
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    t = ops.from_numpy(a)
    assert t.dtype == "int32" and np.array_equal(t.numpy(), a)
    with pytest.raises(TypeError):
        ops.from_numpy([1, 2])
    assert ops.as_tensor([1.5, 2]).dtype == "float32"


def test_to_type_as_clone():
    x = engine.tensor(np.array([1.7, -2.2], np.float32), requires_grad=True)
    assert ops.to(x, dtypes.long).numpy().tolist() == torch.tensor([1.7, -2.2]).to(torch.long).tolist()
    assert ops.to(x, "cpu") is x
    assert ops.to(x, np.int32).dtype == "int32"
    assert ops.to(x, dtype=dtypes.float32) is x
    assert ops.type_as(engine.tensor([1, 2]), x).dtype == "float32"
    c = ops.clone(x)
    assert c is not x and np.array_equal(c.numpy(), x.numpy()) and c.requires_grad


def test_dtype_objects():
    assert dtypes.float32 == "float32" and dtypes.long == "int64" and dtypes.int == "int32"
    assert dtypes.float32 == np.float32 and dtypes.long == np.dtype("int64") and dtypes.bool == np.bool_
    assert dtypes.as_dtype(np.float32) is not None and dtypes.as_dtype("float") == dtypes.float32
    assert dtypes.as_dtype(torch.int64) == dtypes.long and dtypes.as_dtype("torch.bool") == "bool"
    assert dtypes.as_dtype(float) == "float32" and dtypes.as_dtype(int) == "int64"
    assert repr(dtypes.long) == "engine.int64" and dtypes.float32.is_floating_point and not dtypes.long.is_floating_point
    assert engine.zeros(2).dtype == dtypes.float32
    assert engine.tensor([1, 2]).cast(dtypes.long).dtype == "int64"
    assert {dtypes.float32: 1}["float32"] == 1
    with pytest.raises(TypeError, match="not supported"):
        dtypes.as_dtype(np.float64)
    with pytest.raises(TypeError):
        dtypes.as_dtype("complex")
    assert dtypes.is_floating_point(engine.zeros(1)) and not dtypes.is_floating_point(engine.tensor([1]))


def test_printing_shows_values_like_torch():
    for arr in (np.array([[1.5, 2.0], [-3.25, 0.125]], np.float32), np.array([1.0, 2.0], np.float32),
                np.array([3, -1, 7]), np.array([True, False])):
        assert ops.tensor_repr(engine.tensor(arr)) == repr(torch.tensor(arr))
    t = engine.tensor(np.array([0.5], np.float32), requires_grad=True)
    assert ops.tensor_repr(t) == repr(torch.tensor([0.5], requires_grad=True))
