"""A plain loop's optimizer update is recorded once and replayed over each step's new
gradients while nothing it depends on changes; every step must equal torch's, including
steps after a learning-rate change (read at each launch), a changed fixed option, a
parameter whose gradient is missing, and a parameter given new data."""
import numpy as np
import pytest

import engine
from engine import optim
from engine.nn import functional as F

torch = pytest.importorskip("torch")
from helpers import small_mlp_pair as _pair  # noqa: E402


def _count_updates(monkeypatch):
    calls = []
    real = optim.Optimizer._update_all
    monkeypatch.setattr(optim.Optimizer, "_update_all", lambda self: calls.append(1) or real(self))
    return calls


def _step(model, tmodel, opt, topt, x, y, skip=None):
    opt.zero_grad()
    topt.zero_grad()
    loss = F.cross_entropy(model(engine.tensor(x)), engine.tensor(y))
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y))
    tloss.backward()
    if skip is not None:      # a parameter without a gradient this step
        list(model.parameters())[skip].grad = None
        list(tmodel.parameters())[skip].grad = None
    opt.step()
    topt.step()
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
                                     ("Adam", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, momentum=0.5))])
def test_replayed_updates_match_torch_through_changes(monkeypatch, name, kw):
    rng = np.random.default_rng(1)
    model, tmodel = _pair()
    opt, topt = getattr(engine.optim, name)(model.parameters(), **kw), getattr(torch.optim, name)(tmodel.parameters(), **kw)
    calls = _count_updates(monkeypatch)
    data = [(rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 4, 5)) for _ in range(3)]
    for i in range(4):
        _step(model, tmodel, opt, topt, *data[i % 3])
    assert len(calls) == 1, calls           # recorded at the first step, replayed after
    for g, tg in zip(opt.param_groups, topt.param_groups):
        g["lr"] = tg["lr"] = kw["lr"] * 0.5
    _step(model, tmodel, opt, topt, *data[0])
    assert len(calls) == 1                  # the learning rate is read at each launch
    if name == "SGD":
        opt.param_groups[0]["momentum"] = topt.param_groups[0]["momentum"] = 0.5
        _step(model, tmodel, opt, topt, *data[1])
        assert len(calls) == 2              # a fixed option changed: recorded again
    _step(model, tmodel, opt, topt, *data[2], skip=1)   # its step count (bias correction) stays
    _step(model, tmodel, opt, topt, *data[0])
    n = len(calls)
    p0, tp0 = list(model.parameters())[0], list(tmodel.parameters())[0]
    new = rng.standard_normal(p0.shape).astype(np.float32)
    p0.data = engine.tensor(new)
    with torch.no_grad():
        tp0.copy_(torch.tensor(new))
    _step(model, tmodel, opt, topt, *data[1])
    assert len(calls) == n + 1              # a parameter in another storage: recorded again
    _step(model, tmodel, opt, topt, *data[2])
    assert len(calls) == n + 1


def test_update_inside_a_compiled_step_is_not_replayed_by_the_optimizer(monkeypatch):
    model, tmodel = _pair(2)
    opt, topt = engine.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(tmodel.parameters(), lr=0.1)
    step = engine.training_step(model, F.cross_entropy, opt)
    rng = np.random.default_rng(2)
    for _ in range(3):
        x, y = rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 4, 5)
        loss = step(engine.tensor(x), engine.tensor(y)).item()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-5)
    assert opt._replay is None


def test_a_custom_update_is_not_replayed():
    class Halving(engine.optim.SGD):
        def _update(self, i, p, g, grp, gi):
            self.calls = getattr(self, "calls", 0) + 1
            return [(p, p - g * (0.5 ** self.calls))]     # reads state the replay key cannot see
    model, _ = _pair(3)
    opt = Halving(model.parameters(), lr=0.1)
    x, y = engine.tensor(np.ones((5, 6), np.float32)), engine.tensor(np.arange(5) % 4)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert opt._replay is None and opt.calls == 3 * len(list(model.parameters()))
