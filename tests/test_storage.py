"""The storage/version model: constants never alias parameters, nothing is served from an
old version after a write, in-place ops and views behave like PyTorch's, and autograd
refuses a value that was written after it was saved. Each of issue 9's items 1-4 is here."""
import numpy as np
import pytest

import engine
from engine import nn

torch = pytest.importorskip("torch")


def _t(a):
    return engine.tensor(np.asarray(a, np.float32))


def test_parameters_from_equal_constants_do_not_share_storage():
    w = nn.Parameter(engine.zeros(3))
    opt = engine.optim.SGD([w], lr=0.1)
    (w * _t([1.0, 2.0, 3.0])).sum().backward()
    opt.step()
    np.testing.assert_allclose(w.numpy(), [-0.1, -0.2, -0.3], rtol=1e-6)
    np.testing.assert_array_equal(engine.zeros(3).numpy(), [0, 0, 0])
    fresh = nn.Parameter(engine.zeros(3))
    np.testing.assert_array_equal(fresh.numpy(), [0, 0, 0])

    a, b = nn.Parameter(engine.ones(2)), nn.Parameter(engine.ones(2))
    opt = engine.optim.SGD([a], lr=0.5)
    (a * a).sum().backward()
    opt.step()
    np.testing.assert_array_equal(a.numpy(), [0, 0])
    np.testing.assert_array_equal(b.numpy(), [1, 1])


@pytest.mark.parametrize("grad_mode", [True, False])
def test_same_input_after_a_step_gives_the_new_value(grad_mode):
    rng = np.random.default_rng(0)
    engine.manual_seed(0)
    model = nn.Linear(5, 3)
    x = _t(rng.standard_normal((4, 5)))
    opt = engine.optim.Adam(model.parameters(), lr=0.1)
    seen = []
    for _ in range(3):
        if grad_mode:
            val = model(x)
        else:
            with engine.no_grad():
                val = model(x)
        seen.append(val.numpy())
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()
        w, b = model.weight.numpy(), model.bias.numpy()
        np.testing.assert_allclose(model(x).numpy(), x.numpy() @ w.T + b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.weight[1:, :2].numpy(), w[1:, :2])
    assert not np.allclose(seen[0], seen[1]) and not np.allclose(seen[1], seen[2])


def test_parameter_only_loss_changes_every_step():
    w = nn.Parameter(_t([1.0, 2.0]))
    tw = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt, topt = engine.optim.SGD([w], lr=0.01), torch.optim.SGD([tw], lr=0.01)
    for _ in range(4):
        opt.zero_grad()
        topt.zero_grad()
        loss = (w ** 3).sum() + 0.5 * (w * w).sum()
        tloss = (tw ** 3).sum() + 0.5 * (tw * tw).sum()
        loss.backward()
        tloss.backward()
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-6)
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-6)
        opt.step()
        topt.step()
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-6)


def test_tutorial_loop_updates_parameters_in_place():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    w0 = rng.standard_normal((3, 1)).astype(np.float32)
    w = engine.tensor(w0, requires_grad=True)
    tw = torch.tensor(w0, requires_grad=True)
    for _ in range(3):
        loss = ((engine.tensor(x) @ w - engine.tensor(y)) ** 2).mean()
        tloss = ((torch.tensor(x) @ tw - torch.tensor(y)) ** 2).mean()
        loss.backward()
        tloss.backward()
        with engine.no_grad():
            w -= 0.1 * w.grad
            w.grad = None
        with torch.no_grad():
            tw -= 0.1 * tw.grad
            tw.grad = None
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5)


def test_inplace_ops_and_views_match_torch():
    rng = np.random.default_rng(2)
    a0 = rng.standard_normal((4, 5)).astype(np.float32) + 0.5
    e, t = engine.tensor(a0), torch.tensor(a0)
    ev, tv = e[1:3], t[1:3]               # a view: writes reach the base
    ecol, tcol = e[:, 2], t[:, 2]
    ealias, talias = e.detach(), t.detach()
    steps = [
        lambda x, v, c: v.add_(1.5),
        lambda x, v, c: v.mul_(2.0),
        lambda x, v, c: c.sub_(0.25),
        lambda x, v, c: x.__setitem__((slice(None), slice(0, 5, 2)), 7.0),
        lambda x, v, c: x.__iadd__(1.0),
        lambda x, v, c: v.div_(3.0),
        lambda x, v, c: x.clamp_(-1.0, 4.0),
        lambda x, v, c: x.masked_fill_(x > 3.5, -2.0),
        lambda x, v, c: c.copy_(c * 0 + 0.5),
        lambda x, v, c: v.fill_(9.0),
        lambda x, v, c: x.T.__setitem__(1, 3.0),
        lambda x, v, c: v.zero_(),
    ]
    for step in steps:
        step(e, ev, ecol)
        step(t, tv, tcol)
        for ours, theirs in ((e, t), (ev, tv), (ecol, tcol), (ealias, talias)):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_lazy_expression_keeps_the_value_it_was_built_from():
    x = engine.tensor([1.0, 2.0, 3.0])
    y = x * 2            # not computed yet
    x += 10
    z = x * 2
    np.testing.assert_array_equal(y.numpy(), [2, 4, 6])
    np.testing.assert_array_equal(z.numpy(), [22, 24, 26])
    p = nn.Parameter(engine.tensor([1.0, 2.0]))
    logits = p * 3
    opt = engine.optim.SGD([p], lr=1.0)
    (p * p).sum().backward()
    opt.step()
    np.testing.assert_array_equal(logits.numpy(), [3, 6])      # from before the step, as in PyTorch
    np.testing.assert_array_equal((p * 3).numpy(), [-3, -6])


def test_reshape_is_a_view_only_where_torch_makes_one():
    a0 = np.arange(12, dtype=np.float32).reshape(3, 4)
    e, t = engine.tensor(a0), torch.tensor(a0)
    er, tr = e.reshape(2, 6), t.reshape(2, 6)           # contiguous: a view
    ep, tp = e.T.reshape(12), t.T.reshape(12)           # transposed: a copy
    er[0, 0] = 100.0
    tr[0, 0] = 100.0
    ep[1] = -5.0
    tp[1] = -5.0
    for ours, theirs in ((e, t), (er, tr), (ep, tp)):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(RuntimeError, match="view size"):
        e.T.view(12)


def test_errors_like_torch():
    w = engine.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.add_(1.0)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w[0] = 3.0
    x = engine.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    y = h.exp()
    with engine.no_grad():
        h.add_(1.0)     # exp's gradient does not read h: allowed
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([2.0, 4.0]), rtol=1e-6)
    x.grad = None
    h = x * 2
    y = h * h           # saves h
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
    e = engine.ones(3).expand(2, 3)
    with pytest.raises(RuntimeError, match="single memory location"):
        e.add_(1.0)
    i = engine.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="can't be cast"):
        i.mul_(0.5)


def test_inplace_with_grad_routes_gradients_like_torch():
    x0 = np.array([0.5, -1.0, 2.0], np.float32)
    x, tx = engine.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    outs = []
    for lib, v in ((engine, x), (torch, tx)):
        h = v * 3
        z = h + 1           # uses h before the write
        h.mul_(2)
        h.add_(v)
        out = (z * z).sum() + (h * h).sum()
        out.backward()
        outs.append((out.item(), v.grad.numpy() if lib is engine else v.grad.numpy()))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-6)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-6)


def test_retain_graph_allows_a_second_backward():
    x = engine.tensor([1.0, 3.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 12.0])
    assert x.is_leaf and not loss.is_leaf and loss.grad_fn is not None


def test_compiled_step_bumps_versions_so_eager_reads_see_each_step():
    rng = np.random.default_rng(3)
    engine.manual_seed(3)
    model = nn.Linear(4, 2)
    opt = engine.optim.SGD(model.parameters(), lr=0.1)
    step = engine.training_step(model, lambda out, y: ((out - y) ** 2).mean(), opt)
    x = engine.tensor(rng.standard_normal((6, 4)).astype(np.float32))
    y = engine.tensor(rng.standard_normal((6, 2)).astype(np.float32))
    held = model(x)                     # lazy, from the initial weights
    before = model(x).numpy()
    vals = []
    for _ in range(3):
        step(x, y)
        with engine.no_grad():
            vals.append(model(x).numpy())
        w, b = model.weight.numpy(), model.bias.numpy()
        np.testing.assert_allclose(vals[-1], x.numpy() @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(held.numpy(), before, rtol=1e-6)
    assert not np.allclose(vals[0], vals[1]) and not np.allclose(vals[1], vals[2])
