"""A weight used as ``x @ w.T`` gets its gradient as one product in its own layout
(``g.T @ x``) instead of ``x.T @ g`` and a transposing copy, where that moves fewer
elements; the values are the same as torch's either way."""
import numpy as np
import pytest

import engine
from engine.autograd import grad

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("out,swapped", [(24, True), (3, False)])
def test_weight_gradient_layout_and_values(out, swapped):
    rng = np.random.default_rng(5)
    x_np, w_np = rng.standard_normal((40, 17)).astype(np.float32), rng.standard_normal((out, 17)).astype(np.float32)
    y_np = rng.standard_normal((40, out)).astype(np.float32)
    x, w = engine.tensor(x_np), engine.tensor(w_np, requires_grad=True)
    (gw,) = grad(((x @ w.T) * engine.tensor(y_np)).sum(), [w])
    # the swapped product is a MATMUL node of w's shape; otherwise a transposed view of one
    assert gw.node.op == ("MATMUL" if swapped else "PERMUTE")
    tw = torch.tensor(w_np, requires_grad=True)
    ((torch.tensor(x_np) @ tw.T) * torch.tensor(y_np)).sum().backward()
    np.testing.assert_allclose(gw.numpy(), tw.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_batched_transpose_of_a_product_gradient():
    rng = np.random.default_rng(6)
    a_np, b_np = rng.standard_normal((3, 9, 20)).astype(np.float32), rng.standard_normal((3, 11, 20)).astype(np.float32)
    a, b = engine.tensor(a_np), engine.tensor(b_np, requires_grad=True)
    (a @ b.transpose(-1, -2)).sum().backward()
    tb = torch.tensor(b_np, requires_grad=True)
    (torch.tensor(a_np) @ tb.transpose(-1, -2)).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-5)
