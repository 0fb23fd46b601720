"""Shared checks: an op written in the engine and in float64 numpy must agree, values
and gradients (gradients by central finite differences of the float64 reference)."""
from __future__ import annotations

import numpy as np

import engine


def random_input(rng, shape, low=-2.0, high=2.0, positive=False):
    x = rng.uniform(low, high, size=shape)
    if positive:
        x = np.abs(x) + 0.5
    x[np.abs(x) < 1e-3] = 0.5   # never (nearly) zero: keeps relative checks meaningful
    return x


def numeric_grad(f, xs, i, w, eps=1e-6):
    x = xs[i]
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + eps
        hi = np.sum(f(*xs) * w)
        x[idx] = old - eps
        lo = np.sum(f(*xs) * w)
        x[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g


def check_op(engine_fn, numpy_fn, inputs, rtol=1e-5, atol=1e-6, grad=True, grad_rtol=2e-4, grad_atol=1e-4):
    """inputs: float64 arrays. Compares forward values and (optionally) gradients."""
    ts = [engine.tensor(x.astype(np.float32), requires_grad=grad) for x in inputs]
    out = engine_fn(*ts)
    ref = numpy_fn(*[x.astype(np.float32).astype(np.float64) for x in inputs])
    got = out.numpy()
    assert got.shape == np.shape(ref), f"shape {got.shape} != reference {np.shape(ref)}"
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
    if not grad:
        return
    rng = np.random.default_rng(7)
    w = rng.uniform(0.5, 1.5, size=np.shape(ref))
    (out * engine.tensor(w.astype(np.float32))).sum().backward()
    xs = [x.astype(np.float32).astype(np.float64) for x in inputs]
    for i, t in enumerate(ts):
        num = numeric_grad(numpy_fn, xs, i, w)
        assert t.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(t.grad.numpy(), num, rtol=grad_rtol, atol=grad_atol,
                                   err_msg=f"gradient of input {i}")


def small_mlp_pair(seed=0):
    """A 6-9-4 ReLU MLP in the engine and the same weights in a torch model (torch must be
    importable: the callers skip without it)."""
    import torch
    engine.manual_seed(seed)
    model = engine.nn.Sequential(engine.nn.Linear(6, 9), engine.nn.ReLU(), engine.nn.Linear(9, 4))
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 4))
    with torch.no_grad():
        for tp, p in zip(tmodel.parameters(), model.parameters()):
            tp.copy_(torch.tensor(p.numpy()))
    return model, tmodel
