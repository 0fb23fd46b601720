"""Every op and its gradient against float64 numpy, on random non-zero inputs, with odd,
prime and size-1 dims and broadcasting. Runs on the default OpenCL device (PoCL in CI)."""
import math

import numpy as np
import pytest

import engine
from engine.nn import functional as F
from helpers import check_op, random_input

np_erf = np.vectorize(math.erf)


def _sm(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


UNARY = [
    ("neg", lambda t: -t, lambda x: -x, {}),
    ("exp", lambda t: t.exp(), np.exp, {}),
    ("log", lambda t: t.log(), np.log, {"positive": True}),
    ("sqrt", lambda t: t.sqrt(), np.sqrt, {"positive": True}),
    ("abs", lambda t: t.abs(), np.abs, {}),
    ("relu", lambda t: t.relu(), lambda x: np.maximum(x, 0), {}),
    ("sigmoid", lambda t: t.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), {}),
    ("tanh", lambda t: t.tanh(), np.tanh, {}),
    ("gelu", lambda t: t.gelu(), lambda x: 0.5 * x * (1 + np_erf(x / np.sqrt(2))), {}),
    ("pow3", lambda t: t ** 3, lambda x: x ** 3, {}),
    ("pow_frac", lambda t: t ** 1.7, lambda x: x ** 1.7, {"positive": True}),
    ("reciprocal", lambda t: 1.0 / t, lambda x: 1.0 / x, {"positive": True}),
]


@pytest.mark.parametrize("name,fe,fn,kw", UNARY, ids=[u[0] for u in UNARY])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (1, 13)])
def test_unary(rng, name, fe, fn, kw, shape):
    check_op(fe, fn, [random_input(rng, shape, **kw)])


BINARY = [
    ("add", lambda a, b: a + b, lambda a, b: a + b),
    ("sub", lambda a, b: a - b, lambda a, b: a - b),
    ("mul", lambda a, b: a * b, lambda a, b: a * b),
    ("div", lambda a, b: a / b, lambda a, b: a / b),
    ("maximum", lambda a, b: engine.maximum(a, b), np.maximum),
    ("minimum", lambda a, b: engine.minimum(a, b), np.minimum),
]


@pytest.mark.parametrize("name,fe,fn", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("sa,sb", [((5, 3), (5, 3)), ((4, 1, 3), (7, 1)), ((1,), (2, 11)), ((13,), (1, 13))])
def test_binary_broadcast(rng, name, fe, fn, sa, sb):
    a = random_input(rng, sa)
    b = random_input(rng, sb, positive=(name == "div"))
    check_op(fe, fn, [a, b])


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_reduce(rng, op, dim, keepdim):
    x = random_input(rng, (3, 7, 5))
    axis = dim if not isinstance(dim, tuple) else dim
    ref = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[op]
    method = {"max": "amax", "min": "amin"}.get(op, op)    # torch's max(dim) also returns indices
    check_op(lambda t: getattr(t, method)(dim, keepdim), lambda a: ref(a, axis=axis, keepdims=keepdim), [x])


def test_argmax(rng):
    x = random_input(rng, (6, 11))
    t = engine.tensor(x.astype(np.float32))
    np.testing.assert_array_equal(t.argmax(1).numpy(), x.argmax(1))
    np.testing.assert_array_equal(t.argmax(0).numpy(), x.argmax(0))
    assert t.argmax().item() == x.argmax()


@pytest.mark.parametrize("sa,sb", [((5, 7), (7, 3)), ((1, 13), (13, 1)), ((2, 3, 4), (2, 4, 5)),
                                   ((3, 17, 19), (19, 23)), ((33, 65), (65, 37))])
def test_matmul(rng, sa, sb):
    check_op(lambda a, b: a @ b, lambda a, b: a @ b, [random_input(rng, sa), random_input(rng, sb)], rtol=2e-5)


MOVES = [
    ("reshape", lambda t: t.reshape(5, 6), lambda x: x.reshape(5, 6)),
    ("permute", lambda t: t.permute(2, 0, 1), lambda x: x.transpose(2, 0, 1)),
    ("transpose", lambda t: t.transpose(0, 2), lambda x: x.swapaxes(0, 2)),
    ("unsqueeze_expand", lambda t: t.unsqueeze(1).expand(2, 4, 3, 5), lambda x: np.broadcast_to(x[:, None], (2, 4, 3, 5))),
    ("flatten", lambda t: t.flatten(1), lambda x: x.reshape(2, 15)),
    ("squeeze", lambda t: t[:, :1].squeeze(1), lambda x: x[:, 0]),
    ("slice", lambda t: t[1:, ::2, 1:4], lambda x: x[1:, ::2, 1:4]),
    ("index", lambda t: t[1, 2], lambda x: x[1, 2]),
    ("ellipsis_none", lambda t: t[..., None, 2], lambda x: x[..., None, 2]),
    ("view_of_view", lambda t: t.permute(1, 0, 2).reshape(3, 10)[:, 3:7], lambda x: x.transpose(1, 0, 2).reshape(3, 10)[:, 3:7]),
]


@pytest.mark.parametrize("name,fe,fn", MOVES, ids=[m[0] for m in MOVES])
def test_movement(rng, name, fe, fn):
    check_op(fe, fn, [random_input(rng, (2, 3, 5))])


def test_cat_stack_where(rng):
    a, b = random_input(rng, (2, 3)), random_input(rng, (2, 5))
    check_op(lambda x, y: engine.cat([x, y], 1), lambda x, y: np.concatenate([x, y], 1), [a, b])
    c, d = random_input(rng, (4, 3)), random_input(rng, (4, 3))
    check_op(lambda x, y: engine.stack([x, y], 1), lambda x, y: np.stack([x, y], 1), [c, d])
    check_op(lambda x, y: engine.where(x > y, x, y * 2), lambda x, y: np.where(x > y, x, y * 2), [c, d])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_log_softmax(rng, dim):
    x = random_input(rng, (4, 7)) * 3
    check_op(lambda t: t.softmax(dim), lambda a: _sm(a, dim), [x])
    check_op(lambda t: t.log_softmax(dim), lambda a: np.log(_sm(a, dim)), [x])


def test_cross_entropy_and_mse(rng):
    logits = random_input(rng, (9, 5)) * 2
    y = rng.integers(0, 5, size=9)
    yt = engine.tensor(y)
    check_op(lambda t: F.cross_entropy(t, yt), lambda a: -np.mean(np.log(_sm(a, 1))[np.arange(9), y]), [logits])
    tgt = random_input(rng, (9, 5))
    check_op(lambda a, b: F.mse_loss(a, b), lambda a, b: np.mean((a - b) ** 2), [logits, tgt])


def _np_conv(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + b.reshape(1, o, 1, 1)


@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1)])
def test_conv2d(rng, stride, pad):
    x, w, b = random_input(rng, (2, 3, 7, 6)), random_input(rng, (5, 3, 3, 3)), random_input(rng, (5,))
    check_op(lambda a, ww, bb: F.conv2d(a, ww, bb, stride, pad), lambda a, ww, bb: _np_conv(a, ww, bb, stride, pad),
             [x, w, b], rtol=3e-5)


def test_pools(rng):
    x = random_input(rng, (2, 3, 6, 4))
    check_op(lambda t: F.max_pool2d(t, 2), lambda a: a.reshape(2, 3, 3, 2, 2, 2).max(axis=(3, 5)), [x])
    check_op(lambda t: F.avg_pool2d(t, 2), lambda a: a.reshape(2, 3, 3, 2, 2, 2).mean(axis=(3, 5)), [x])
    check_op(lambda t: F.max_pool2d(t, 3, stride=1), lambda a: np.stack(
        [np.stack([a[:, :, i:i + 3, j:j + 3].max(axis=(2, 3)) for j in range(2)], -1) for i in range(4)], -2), [x])


def test_layer_norm(rng):
    x, w, b = random_input(rng, (3, 7)), random_input(rng, (7,)), random_input(rng, (7,))

    def ref(a, ww, bb):
        m, v = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
        return (a - m) / np.sqrt(v + 1e-5) * ww + bb
    check_op(lambda a, ww, bb: F.layer_norm(a, 7, ww, bb), ref, [x, w, b], grad_rtol=1e-3, grad_atol=3e-4)


def test_batch_norm_training(rng):
    x = random_input(rng, (6, 4, 3, 3))
    bn = engine.nn.BatchNorm2d(4)

    def ref(a):
        m, v = a.mean((0, 2, 3), keepdims=True), a.var((0, 2, 3), keepdims=True)
        return (a - m) / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(bn(engine.tensor(x.astype(np.float32))).numpy(), ref(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)


def test_dropout_statistics():
    engine.manual_seed(3)
    x = engine.ones(200, 100)
    y = engine.nn.functional.dropout(x, 0.25, training=True).numpy()
    kept = (y != 0).mean()
    assert 0.72 < kept < 0.78
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    y2 = engine.nn.functional.dropout(x, 0.25, training=True).numpy()
    assert (y2 != y).any(), "two dropout masks were identical"


def test_creation_and_item():
    engine.manual_seed(0)
    assert engine.arange(5).numpy().tolist() == [0, 1, 2, 3, 4]
    assert engine.full((2, 3), 2.5).numpy().sum() == 15.0
    assert engine.zeros(3).numpy().tolist() == [0, 0, 0]
    r = engine.randn(1000).numpy()
    assert abs(r.mean()) < 0.15 and 0.85 < r.std() < 1.15
    assert engine.tensor([[1.5]]).item() == 1.5
    t = engine.tensor([1.0, 2.0], requires_grad=True)
    assert t.detach().requires_grad is False


def test_grad_accumulates_for_reused_value(rng):
    x = random_input(rng, (4,))
    t = engine.tensor(x.astype(np.float32), requires_grad=True)
    ((t * t) + t.exp() * t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), 2 * x + np.exp(x) * (1 + x), rtol=1e-5)


@pytest.mark.parametrize("n", [40000, 1 << 16])
@pytest.mark.parametrize("op", ["sum", "max", "mean"])
def test_long_reductions_split_in_two(rng, op, n):
    x = random_input(rng, (n,))
    ref = {"sum": np.sum, "max": np.max, "mean": np.mean}[op]
    check_op(lambda t: getattr(t, op)(), lambda a: ref(a), [x], rtol=2e-5, grad=False)
    t = engine.tensor(x.astype(np.float32), requires_grad=True)
    getattr(t, op)().backward()
    g = t.grad.numpy()
    want = {"sum": np.ones(n), "mean": np.full(n, 1.0 / n), "max": (x.astype(np.float32) == x.astype(np.float32).max()).astype(float)}[op]
    np.testing.assert_allclose(g, want, rtol=1e-6)
    with engine.profile() as p:
        getattr(engine.tensor(x.astype(np.float32)), op)().realize()
    # chunks, then the partial results; a ragged max pads with -inf (engine/reduce_plan.py)
    assert sum(k["template"].startswith("reduce") for k in p.kernels) == 2
