"""Public API pieces that sit in the core: parameter groups (with a schedule, also inside a
compiled step), autograd.grad, Tensor methods from engine.ops, 0-d tensors, inf constants."""
import numpy as np
import pytest

import engine
from engine import nn
from engine.nn import functional as F

torch = pytest.importorskip("torch")


def _pair_models(seed=0):
    engine.manual_seed(seed)
    m = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    tm = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    with torch.no_grad():
        for tp, p in zip(tm.parameters(), m.parameters()):
            tp.copy_(torch.tensor(p.numpy()))
    return m, tm


@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("compiled", [False, True])
def test_parameter_groups_and_a_schedule_match_torch(kind, compiled):
    m, tm = _pair_models()
    groups = lambda mod: [{"params": list(mod[0].parameters()), "lr": 0.05},   # noqa: E731
                          {"params": list(mod[2].parameters())}]
    make = {"sgd": lambda lib, g: lib.optim.SGD(g, lr=0.1, momentum=0.9),
            "adam": lambda lib, g: lib.optim.Adam(g, lr=0.01),
            "rmsprop": lambda lib, g: lib.optim.RMSprop(g, lr=0.01, momentum=0.5)}[kind]
    opt, topt = make(engine, groups(m)), make(torch, groups(tm))
    sched = engine.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.5)
    step = engine.training_step(m, F.cross_entropy, opt, compiled=compiled)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6)
        loss = step(engine.tensor(x), engine.tensor(y))
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in topt.param_groups])
    for p, tp in zip(m.parameters(), tm.parameters()):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    opt2 = make(engine, groups(m))
    opt2.load_state_dict(sd)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_autograd_grad_matches_torch():
    x0 = np.array([0.5, -1.5, 2.0], np.float32)
    x, tx = engine.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    h, th = x * x, tx * tx
    y, ty = (h * x.tanh()).sum(), (th * tx.tanh()).sum()
    gx, gh = engine.autograd.grad(y, [x, h], retain_graph=True)
    tgx, tgh = torch.autograd.grad(ty, [tx, th], retain_graph=True)
    np.testing.assert_allclose(gx.numpy(), tgx.numpy(), rtol=1e-6)
    np.testing.assert_allclose(gh.numpy(), tgh.numpy(), rtol=1e-6)
    assert x.grad is None
    v = engine.tensor([1.0, 2.0, 3.0])
    (gv,) = engine.autograd.grad(h, x, grad_outputs=v, retain_graph=True)
    np.testing.assert_allclose(gv.numpy(), 2 * x0 * [1, 2, 3], rtol=1e-6)
    z = engine.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="not used"):
        engine.autograd.grad(y, [z], retain_graph=True)
    assert engine.autograd.grad(y, [z], allow_unused=True) == (None,)


def test_tensor_methods_from_ops_and_small_fixes():
    a = np.array([[3.0, 1.0, 2.0], [0.5, 4.0, -1.0]], np.float32)
    t = engine.tensor(a)
    values, indices = t.max(1)
    np.testing.assert_array_equal(values.numpy(), a.max(1))
    np.testing.assert_array_equal(indices.numpy(), a.argmax(1))
    np.testing.assert_array_equal(t.amax(0).numpy(), a.max(0))
    np.testing.assert_allclose(t.clamp(0.0, 2.5).numpy(), a.clip(0, 2.5))
    np.testing.assert_array_equal(t.sort(1).values.numpy(), np.sort(a, 1))
    assert "tensor(" in repr(t) and "3." in repr(t)
    assert engine.tensor(np.float32(2.5)).shape == () and engine.tensor(2.5).item() == 2.5
    np.testing.assert_array_equal(engine.full((3,), float("-inf")).numpy(), [-np.inf] * 3)
    np.testing.assert_array_equal((engine.full((2,), float("inf")) * 2).numpy(), [np.inf, np.inf])
