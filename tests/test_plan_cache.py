"""A plain training loop builds the same graph each step over new buffers: its schedule
and kernels come from the plan cache from the second step on, with the same numbers."""
import numpy as np
import pytest

import engine
from engine import realize
from engine.nn import functional as F

torch = pytest.importorskip("torch")


def test_plain_loop_reuses_plans_and_matches_torch():
    rng = np.random.default_rng(7)
    engine.manual_seed(7)
    model = engine.nn.Sequential(engine.nn.Linear(6, 9), engine.nn.ReLU(), engine.nn.Linear(9, 4))
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 4))
    with torch.no_grad():
        for tp, p in zip(tmodel.parameters(), model.parameters()):
            tp.copy_(torch.tensor(p.numpy()))
    opt = engine.optim.Adam(model.parameters(), lr=0.01)
    topt = torch.optim.Adam(tmodel.parameters(), lr=0.01)
    x, y = rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 4, 5)
    hits = []
    for step in range(4):
        before = realize._plans.hits
        opt.zero_grad()
        loss = F.cross_entropy(model(engine.tensor(x)), engine.tensor(y))
        loss.backward()
        opt.step()
        hits.append(realize._plans.hits - before)
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    assert hits[-1] > 0 and hits[-1] == hits[-2], hits
    for tp, p in zip(tmodel.parameters(), model.parameters()):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_structure_not_identity_is_the_key():
    a = engine.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = engine.tensor(np.ones((2, 3), np.float32))
    first = ((a * 2.0) + b).numpy()
    hits = realize._plans.hits
    c = engine.tensor(np.full((2, 3), 3.0, np.float32))
    second = ((c * 2.0) + b).numpy()          # same structure, other buffer: a hit
    third = ((c * 5.0) + b).numpy()           # another constant: another kernel
    assert realize._plans.hits == hits + 1
    np.testing.assert_array_equal(first, np.arange(6).reshape(2, 3) * 2 + 1)
    np.testing.assert_array_equal(second, np.full((2, 3), 7.0))
    np.testing.assert_array_equal(third, np.full((2, 3), 16.0))
