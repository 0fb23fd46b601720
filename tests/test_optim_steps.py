"""Step counts are per parameter, as in torch: a parameter without a gradient in some steps
keeps its own count (Adam's bias correction, Adagrad's decay, SGD's first momentum step),
in a plain loop (with the update replay), in a compiled step, and through state_dict /
load_state_dict with torch's key names (``state[i]["step"]``), both ways."""
import numpy as np
import pytest

import engine
from engine.nn import functional as F

torch = pytest.importorskip("torch")
from helpers import small_mlp_pair as _pair  # noqa: E402

CASES = [("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01, weight_decay=0.1)),
         ("RMSprop", dict(lr=0.01, momentum=0.5)), ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
         ("SGD", dict(lr=0.05, momentum=0.9))]


def _data(seed, n):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 4, 5)) for _ in range(n)]


def _torch_step(tmodel, topt, x, y, skip):
    topt.zero_grad()
    torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(y)).backward()
    if skip is not None:
        list(tmodel.parameters())[skip].grad = None
    topt.step()


def _engine_step(model, opt, x, y, skip):
    opt.zero_grad()
    F.cross_entropy(model(engine.tensor(x)), engine.tensor(y)).backward()
    if skip is not None:
        list(model.parameters())[skip].grad = None
    opt.step()


def _close(model, tmodel):
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=2e-5, atol=2e-6)


# parameter 1 (the first bias) skips steps 0-1 (it starts late) and step 3
SKIPS = [1, 1, None, 1, None, None]


@pytest.mark.parametrize("name,kw", CASES)
def test_a_parameter_that_skips_steps_matches_torch(name, kw):
    model, tmodel = _pair()
    opt, topt = getattr(engine.optim, name)(model.parameters(), **kw), getattr(torch.optim, name)(tmodel.parameters(), **kw)
    for (x, y), skip in zip(_data(1, len(SKIPS)), SKIPS):
        _engine_step(model, opt, x, y, skip)
        _torch_step(tmodel, topt, x, y, skip)
        _close(model, tmodel)
    assert opt.step_count == len(SKIPS)
    tsd = topt.state_dict()
    for i, st in tsd["state"].items():
        if "step" in st:
            assert opt.state_dict()["state"][i]["step"] == float(st["step"])
    assert opt._steps == [6, 3, 6, 6]


def _to_torch(sd, topt):
    """The engine's state dict as torch tensors, its groups over torch's own options."""
    groups = [tg | {k: v for k, v in g.items() if k != "step_count"}
              for tg, g in zip(topt.state_dict()["param_groups"], sd["param_groups"])]
    return {"param_groups": groups,
            "state": {i: {k: torch.tensor(np.asarray(v)) for k, v in st.items()} for i, st in sd["state"].items()}}


def _from_torch(sd, opt):
    """torch's state dict as numpy, its groups cut to the engine's options."""
    return {"param_groups": [{k: v for k, v in g.items() if k in opt.defaults or k == "params"}
                             for g in sd["param_groups"]],
            "state": {i: {k: v.numpy() for k, v in st.items()} for i, st in sd["state"].items()}}


@pytest.mark.parametrize("name,kw", CASES[:1] + CASES[3:])
def test_state_dict_step_counts_round_trip_with_torch(name, kw):
    """Train 3 steps with a skipping parameter, hand the state to the other library, and
    train on there: every step equal to a torch run that never switched."""
    data = _data(2, 6)
    skips = [1, None, 1, None, 1, None]
    model, tmodel = _pair(4)
    opt, topt = getattr(engine.optim, name)(model.parameters(), **kw), getattr(torch.optim, name)(tmodel.parameters(), **kw)
    for (x, y), skip in zip(data[:3], skips[:3]):
        _engine_step(model, opt, x, y, skip)
        _torch_step(tmodel, topt, x, y, skip)
    # engine -> torch: a fresh torch optimizer on the engine's weights takes the engine's state
    m2, t2 = _pair(5)
    with torch.no_grad():
        for tp, p in zip(t2.parameters(), model.parameters()):
            tp.copy_(torch.tensor(p.numpy()))
    topt2 = getattr(torch.optim, name)(t2.parameters(), **kw)
    topt2.load_state_dict(_to_torch(opt.state_dict(), topt2))
    # torch -> engine: a fresh engine optimizer on torch's weights takes torch's state
    for tp, p in zip(tmodel.parameters(), m2.parameters()):
        p.data = engine.tensor(tp.detach().numpy())
    opt2 = getattr(engine.optim, name)(m2.parameters(), **kw)
    opt2.load_state_dict(_from_torch(topt.state_dict(), opt2))
    if name != "SGD":       # torch's SGD keeps no count (a momentum buffer means >= 1 step)
        assert opt2._steps == [int(topt.state_dict()["state"].get(i, {}).get("step", 0)) for i in range(4)]
    for (x, y), skip in zip(data[3:], skips[3:]):
        _torch_step(tmodel, topt, x, y, skip)
        _torch_step(t2, topt2, x, y, skip)
        _engine_step(m2, opt2, x, y, skip)
        _close(m2, tmodel)
        for a, b in zip(t2.parameters(), tmodel.parameters()):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_compiled_step_with_a_frozen_bias_counts_its_steps_like_torch():
    """A compiled step whose second layer's bias never gets a gradient, after plain steps
    in which it did: each replay advances only the others' counts."""
    model, tmodel = _pair(6)
    kw = dict(lr=0.01)
    opt, topt = engine.optim.Adam(model.parameters(), **kw), torch.optim.Adam(tmodel.parameters(), **kw)
    data = _data(3, 6)
    for x, y in data[:2]:
        _engine_step(model, opt, x, y, None)
        _torch_step(tmodel, topt, x, y, None)

    @engine.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        list(model.parameters())[3].grad = None
        opt.step()
        return loss

    for x, y in data[2:]:
        step(engine.tensor(x), engine.tensor(y))
        _torch_step(tmodel, topt, x, y, 3)
        _close(model, tmodel)
    assert step.replays == 3
    assert opt._steps == [6, 6, 6, 2]
    assert float(opt.state_dict()["state"][3]["step"]) == float(topt.state_dict()["state"][3]["step"]) == 2


def test_all_shapes_updates_are_one_realize_with_one_kernel_per_shape(monkeypatch):
    """One realize for every parameter shape (a cold start builds them together, see
    Device.prebuild), still one fused kernel per shape (parameter and state together)."""
    from engine import launch, realize as rz
    model, _ = _pair(7)
    opt = engine.optim.Adam(model.parameters(), lr=0.01)
    x, y = _data(8, 1)[0]
    F.cross_entropy(model(engine.tensor(x)), engine.tensor(y)).backward()
    engine.realize_all(*[p.grad for p in model.parameters()])
    plans = []
    real = rz._run_plan
    monkeypatch.setattr(rz, "_run_plan", lambda todo, *a: plans.append(len(todo)) or real(todo, *a))
    with launch.capture() as cap:
        opt.step()
    shapes = {p.shape for p in model.parameters()}
    assert plans == [3 * 4]       # parameter, exp_avg and exp_avg_sq of each of 4 parameters
    assert sum(isinstance(it, launch.Launch) for it in cap.items) == len(shapes)
