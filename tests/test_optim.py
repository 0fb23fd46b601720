"""One SGD-momentum step and one Adam step on a small MLP against a hand-written numpy
reference (float64), plus AdamW's decoupled decay."""
import numpy as np
import pytest

import engine
from engine.nn import functional as F


def _mlp_and_grads(rng):
    engine.manual_seed(5)
    model = engine.nn.Sequential(engine.nn.Linear(7, 5), engine.nn.Tanh(), engine.nn.Linear(5, 3))
    x = rng.normal(size=(6, 7)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    return model, x, y


def _np_grads(params, x, y):
    w1, b1, w2, b2 = [p.astype(np.float64) for p in params]
    h = np.tanh(x @ w1.T + b1)
    z = h @ w2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = p.copy()
    dz[np.arange(len(y)), y] -= 1
    dz /= len(y)
    gw2, gb2 = dz.T @ h, dz.sum(0)
    dh = dz @ w2 * (1 - h * h)
    gw1, gb1 = dh.T @ x, dh.sum(0)
    return [gw1, gb1, gw2, gb2]


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_two_steps(rng, nesterov):
    model, x, y = _mlp_and_grads(rng)
    opt = engine.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
    ref = [p.numpy().astype(np.float64) for p in model.parameters()]
    bufs = [None] * 4
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(engine.tensor(x)), engine.tensor(y)).backward()
        opt.step()
        gs = _np_grads(ref, x.astype(np.float64), y)
        for i, g in enumerate(gs):
            g = g + 0.01 * ref[i]
            bufs[i] = g if bufs[i] is None else 0.9 * bufs[i] + g
            d = g + 0.9 * bufs[i] if nesterov else bufs[i]
            ref[i] = ref[i] - 0.1 * d
    for p, r in zip(model.parameters(), ref):
        np.testing.assert_allclose(p.numpy(), r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_three_steps(rng, cls):
    model, x, y = _mlp_and_grads(rng)
    wd = 0.05
    opt = getattr(engine.optim, cls)(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd)
    ref = [p.numpy().astype(np.float64) for p in model.parameters()]
    m = [np.zeros_like(r) for r in ref]
    v = [np.zeros_like(r) for r in ref]
    for t in range(1, 4):
        opt.zero_grad()
        F.cross_entropy(model(engine.tensor(x)), engine.tensor(y)).backward()
        opt.step()
        gs = _np_grads(ref, x.astype(np.float64), y)
        for i, g in enumerate(gs):
            if cls == "Adam":
                g = g + wd * ref[i]
            else:
                ref[i] = ref[i] * (1 - 0.01 * wd)
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.99 * v[i] + 0.01 * g * g
            mhat, vhat = m[i] / (1 - 0.9 ** t), v[i] / (1 - 0.99 ** t)
            ref[i] = ref[i] - 0.01 * mhat / (np.sqrt(vhat) + 1e-8)
    for p, r in zip(model.parameters(), ref):
        np.testing.assert_allclose(p.numpy(), r, rtol=1e-4, atol=1e-5)


def test_optimizer_state_dict_roundtrip(rng):
    model, x, y = _mlp_and_grads(rng)
    opt = engine.optim.Adam(model.parameters(), lr=0.01)
    F.cross_entropy(model(engine.tensor(x)), engine.tensor(y)).backward()
    opt.step()
    sd = opt.state_dict()
    opt2 = engine.optim.Adam(model.parameters(), lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.step_count == 1 and opt2.param_groups[0]["lr"] == 0.01
    np.testing.assert_array_equal(opt2.state[0]["exp_avg"].numpy(), sd["state"][0]["exp_avg"])


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_found_inf_skips_the_update_on_the_device_even_in_a_replayed_capture(rng, name):
    """optimizer.found_inf: a captured update (as engine-nodes replay it) reads the flag at
    every replay; while it is nonzero nothing moves, not even with NaN gradients, and once
    cleared the steps go on exactly as an optimizer that never saw the refused steps."""
    from engine import launch, realize as rz
    kw = {"lr": 0.05, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    shapes = [(5, 7), (7,), ()]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3)]
    flag = engine.tensor(np.zeros(1, np.int32))
    flag.realize()
    dev = flag.device

    def setup():
        ps = [engine.tensor(a.copy(), requires_grad=True) for a in init]
        gs = [engine.tensor(np.zeros(s, np.float32)) for s in shapes]
        for p, g in zip(ps, gs):
            p.realize(), g.realize()
            p.grad = g
        return ps, gs, getattr(engine.optim, name)(ps, **kw)

    def put(t, a):
        dev.upload(np.ascontiguousarray(a), dest=rz.buffer_of(t._storage.node))

    gated, ggs, opt = setup()
    opt.found_inf = flag
    with launch.capture() as cap:
        opt.step()                     # the capture runs the first step (flag 0, zero gradients)
    # the gate is read inside the fused update: still one kernel per parameter shape
    assert sum(isinstance(it, launch.Launch) for it in cap.items) == len(shapes)
    plain, pgs, ref = setup()
    ref.step()
    for k, gs in enumerate(grads):
        for t, u, a in zip(ggs, pgs, gs):
            put(t, a), put(u, a)
        launch.replay(cap.items, dev)
        ref.step()
        after = [p.numpy().copy() for p in gated]
        np.testing.assert_array_equal(after[0], plain[0].numpy())
        if k == 1:                     # refused: NaN gradients, flag set, nothing may move
            put(flag, np.int32([3]))
            for t in ggs:
                put(t, np.full(t.shape, np.nan, np.float32))
            before = after
            launch.replay(cap.items, dev)
            launch.replay(cap.items, dev)
            for b, p in zip(before, gated):
                np.testing.assert_array_equal(p.numpy(), b)
            for st in opt.state.values():
                assert all(np.isfinite(v.numpy()).all() for v in st.values())
            put(flag, np.int32([0]))
            opt.step_count = ref.step_count         # the refused steps' host counters rewound
    for p, q in zip(gated, plain):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert max(np.abs(p.numpy() - a).max() for p, a in zip(gated, init)) > 1e-3
