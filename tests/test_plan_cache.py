"""A plain training loop builds the same graph each step over new buffers: its schedule
and kernels come from the plan cache from the second step on, with the same numbers."""
import numpy as np
import pytest

import engine
from engine import realize
from engine.creation import device_rand
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


def _count_planning(monkeypatch):
    calls = []
    real = realize._lower_and_schedule
    monkeypatch.setattr(realize, "_lower_and_schedule", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_hit_skips_lowering_and_reads_the_new_buffers(monkeypatch, rng=np.random.default_rng(3)):
    """The remembered plan runs over the new graph's buffers: the GEMM's panels (nodes the
    lowering made, not in the user's graph) are intermediates of the plan, so a hit needs
    no lowering, scheduling or codegen, and gives the new inputs' values."""
    calls = _count_planning(monkeypatch)
    w = engine.tensor(rng.standard_normal((37, 19)).astype(np.float32))
    xs = [rng.standard_normal((5, 37)).astype(np.float32) for _ in range(3)]
    outs = [(engine.tensor(x) @ w).relu().sum(1).numpy() for x in xs]
    assert len(calls) == 1, calls
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out, np.maximum(x.astype(np.float64) @ w.numpy(), 0).sum(1), rtol=1e-5, atol=1e-5)


def test_a_hit_draws_new_random_numbers(monkeypatch):
    calls = _count_planning(monkeypatch)
    first = (engine.tensor(np.ones(64, np.float32)) * device_rand((64,), engine.default_device())).numpy()
    second = (engine.tensor(np.ones(64, np.float32)) * device_rand((64,), engine.default_device())).numpy()
    assert len(calls) == 1 and not np.array_equal(first, second)
    assert ((0 <= first) & (first < 1)).all() and ((0 <= second) & (second < 1)).all()


def test_in_place_targets_are_part_of_the_key():
    """The same value written into a given buffer (an optimizer's scratch) and computed
    as a new tensor are two plans, both right."""
    a = engine.tensor(np.arange(6, dtype=np.float32))
    b = engine.tensor(np.ones(6, np.float32))
    a.add_(b * 2.0)
    c = a + b * 2.0
    np.testing.assert_array_equal(a.numpy(), np.arange(6) + 2.0)
    np.testing.assert_array_equal(c.numpy(), np.arange(6) + 4.0)
    a.add_(b * 2.0)
    np.testing.assert_array_equal(a.numpy(), np.arange(6) + 4.0)
