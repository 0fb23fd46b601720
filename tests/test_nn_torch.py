"""engine.nn (layers, functional, state dicts), nn.utils, lr_scheduler and the RMSprop/Adagrad optimizers
against PyTorch, from the same weights and inputs."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import engine  # noqa: E402
from engine import nn, lr_scheduler  # noqa: E402
from engine.nn import functional as F  # noqa: E402
from engine.optim import RMSprop, Adagrad  # noqa: E402

TF = torch.nn.functional


def _inp(rng, shape, positive=False):
    x = rng.uniform(-2, 2, size=shape)
    if positive:
        x = np.abs(x) + 0.5
    x[np.abs(x) < 1e-2] = 0.5
    return x.astype(np.float32)


def compare(fe, ft, inputs, rtol=1e-5, atol=1e-6, grad=True, grad_rtol=None, grad_atol=None):
    """Float arrays become leaf tensors with gradients; other arrays are passed as they are."""
    isf = [isinstance(x, np.ndarray) and x.dtype == np.float32 for x in inputs]
    te = [engine.tensor(x, requires_grad=grad and f) if isinstance(x, np.ndarray) else x for x, f in zip(inputs, isf)]
    tt = [torch.tensor(x.astype(np.float64) if f else x, requires_grad=grad and f) if isinstance(x, np.ndarray) else x
          for x, f in zip(inputs, isf)]
    oe, ot = fe(*te), ft(*tt)
    np.testing.assert_allclose(oe.numpy(), ot.detach().numpy(), rtol=rtol, atol=atol)
    if not grad:
        return
    w = np.random.default_rng(3).uniform(0.5, 1.5, size=ot.shape)
    (oe * engine.tensor(w.astype(np.float32))).sum().backward()
    (ot * torch.tensor(w)).sum().backward()
    for i, (a, b) in enumerate(zip(te, tt)):
        if isf[i]:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=grad_rtol or rtol * 2,
                                       atol=grad_atol or atol * 2, err_msg=f"gradient of input {i}")


S = (3, 7)

ACTS = [
    ("silu", F.silu, TF.silu), ("softplus", F.softplus, TF.softplus),
    ("softplus_beta", lambda x: F.softplus(x * 10, beta=2, threshold=15), lambda x: TF.softplus(x * 10, beta=2, threshold=15)),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1)),
    ("elu", F.elu, TF.elu), ("gelu_tanh", lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    ("gelu", F.gelu, TF.gelu), ("mish", F.mish, TF.mish), ("hardtanh", F.hardtanh, TF.hardtanh),
    ("relu6", lambda x: F.relu6(x * 4), lambda x: TF.relu6(x * 4)), ("hardswish", lambda x: F.hardswish(x * 2), lambda x: TF.hardswish(x * 2)),
    ("hardsigmoid", lambda x: F.hardsigmoid(x * 2), lambda x: TF.hardsigmoid(x * 2)), ("logsigmoid", F.logsigmoid, TF.logsigmoid),
    ("normalize", F.normalize, TF.normalize), ("normalize_p1", lambda x: F.normalize(x, 1, 0), lambda x: TF.normalize(x, 1, 0)),
]


def test_activations(rng):
    """All of them in one graph (one stacked output, so a few kernel builds)."""
    x = _inp(rng, S)
    compare(lambda t: engine.stack([a[1](t) for a in ACTS]), lambda t: torch.stack([a[2](t) for a in ACTS]), [x], rtol=2e-5)


def test_activation_modules(rng):
    x = _inp(rng, S)
    for em, tm in [(nn.SiLU(), torch.nn.SiLU()), (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
                   (nn.GELU("tanh"), torch.nn.GELU("tanh")), (nn.Softmax(1), torch.nn.Softmax(1)),
                   (nn.LogSoftmax(0), torch.nn.LogSoftmax(0)), (nn.ELU(0.5), torch.nn.ELU(0.5)),
                   (nn.Softplus(), torch.nn.Softplus())]:
        compare(em, tm, [x], grad=False, rtol=2e-5)


def test_losses(rng):
    x, y = _inp(rng, S), _inp(rng, S)
    p = 1 / (1 + np.exp(-x))
    t = (rng.random(S) > 0.5).astype(np.float32)
    w = _inp(rng, (7,), positive=True)
    for red in ("sum",):
        compare(lambda a: F.binary_cross_entropy(a, engine.tensor(t), reduction=red),
                lambda a: TF.binary_cross_entropy(a, torch.tensor(t, dtype=torch.float64), reduction=red), [p], rtol=2e-5)
    compare(lambda a: F.binary_cross_entropy_with_logits(a, engine.tensor(t)),
            lambda a: TF.binary_cross_entropy_with_logits(a, torch.tensor(t, dtype=torch.float64)), [x], rtol=2e-5)
    compare(lambda a: F.binary_cross_entropy_with_logits(a, engine.tensor(t), pos_weight=engine.tensor(w), reduction="sum"),
            lambda a: TF.binary_cross_entropy_with_logits(a, torch.tensor(t, dtype=torch.float64), pos_weight=torch.tensor(w, dtype=torch.float64), reduction="sum"),
            [x], rtol=2e-5)
    compare(F.l1_loss, TF.l1_loss, [x, y])
    compare(F.smooth_l1_loss, TF.smooth_l1_loss, [x, y])
    compare(F.huber_loss, TF.huber_loss, [x, y])
    compare(lambda a, b: F.mse_loss(a, b, reduction="none"), lambda a, b: TF.mse_loss(a, b, reduction="none"), [x, y])
    lp = np.log(p / p.sum(1, keepdims=True)).astype(np.float32)
    compare(lambda a: F.kl_div(a, engine.tensor(p / p.sum(1, keepdims=True)), reduction="batchmean"),
            lambda a: TF.kl_div(a, torch.tensor(p / p.sum(1, keepdims=True), dtype=torch.float64), reduction="batchmean"), [lp], rtol=2e-5)
    compare(F.cosine_similarity, TF.cosine_similarity, [x, y], rtol=2e-5)


@pytest.mark.parametrize("kw", [{"ignore_index": 2}, {"label_smoothing": 0.1, "reduction": "sum"}, {"reduction": "none"},
                                {"weight": True, "label_smoothing": 0.2, "ignore_index": 0}])
def test_cross_entropy_options(rng, kw):
    logits = _inp(rng, (6, 5))
    y = np.array([0, 2, 4, 2, 1, 3])
    kw_e, kw_t = dict(kw), dict(kw)
    if kw.get("weight"):
        w = _inp(rng, (5,), positive=True)
        kw_e["weight"], kw_t["weight"] = engine.tensor(w), torch.tensor(w, dtype=torch.float64)
    compare(lambda a: F.cross_entropy(a, engine.tensor(y), **kw_e), lambda a: TF.cross_entropy(a, torch.tensor(y), **kw_t),
            [logits], rtol=2e-5)
    if "label_smoothing" not in kw:
        compare(lambda a: F.nll_loss(a.log_softmax(1), engine.tensor(y), **kw_e),
                lambda a: TF.nll_loss(a.log_softmax(1), torch.tensor(y), **kw_t), [logits], rtol=2e-5)


def test_cross_entropy_ncl_logits_and_probability_targets(rng):
    logits = _inp(rng, (2, 5, 3))
    y = np.array([[0, 4, 2], [1, 1, -100]])
    compare(lambda a: F.cross_entropy(a, engine.tensor(y)), lambda a: TF.cross_entropy(a, torch.tensor(y)), [logits], rtol=2e-5)
    compare(lambda a: F.cross_entropy(a, engine.tensor(y), reduction="none"),
            lambda a: TF.cross_entropy(a, torch.tensor(y), reduction="none"), [logits], rtol=2e-5)
    probs = rng.random((4, 5)).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    compare(lambda a: F.cross_entropy(a, engine.tensor(probs), label_smoothing=0.1),
            lambda a: TF.cross_entropy(a, torch.tensor(probs, dtype=torch.float64), label_smoothing=0.1),
            [_inp(rng, (4, 5))], rtol=2e-5)


def test_cross_entropy_rejects_targets_outside_the_classes():
    """issue 9: class 7 of 3 used to give a number."""
    logits = engine.randn(4, 3)
    for bad in (7, 3, -1):
        with pytest.raises(IndexError, match=rf"target {bad} .*C = 3"):
            F.cross_entropy(logits, engine.tensor([0, 1, bad, 2]))
    with pytest.raises(IndexError):
        F.nll_loss(logits, engine.tensor([0, 1, 5, 2]))
    # ignore_index is not out of range
    assert np.isfinite(F.cross_entropy(logits, engine.tensor([0, 1, -100, 2])).item())
    with pytest.raises(IndexError, match="out of range"):
        F.embedding(engine.tensor([0, 9]), engine.randn(4, 2))


def test_sdpa(rng):
    q, k, v = _inp(rng, (2, 3, 5, 4)), _inp(rng, (2, 3, 7, 4)), _inp(rng, (2, 3, 7, 4))
    qs = _inp(rng, (2, 3, 7, 4))
    compare(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
            lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, is_causal=True), [qs, k, v], rtol=2e-5)
    m = rng.random((5, 7)) > 0.3
    m[:, 0] = True
    compare(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=engine.tensor(m), scale=0.3),
            lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(m), scale=0.3), [q, k, v],
            rtol=2e-5, grad=False)


@pytest.mark.parametrize("pad,mode,value", [((-1, 0, 2, 1), "constant", 1.5), ((2, 1, 1, 1), "reflect", 0),
                                            ((1, 2, 1, 1), "replicate", 0), ((2, 1, 0, 1), "circular", 0)])
def test_pad(rng, pad, mode, value):
    x = _inp(rng, (2, 3, 5, 4))
    compare(lambda t: F.pad(t, pad, mode, value), lambda t: TF.pad(t, pad, mode, value), [x])


def test_interpolate_nearest(rng):
    x = _inp(rng, (1, 2, 3, 5))
    compare(lambda t: F.interpolate(t, scale_factor=2), lambda t: TF.interpolate(t, scale_factor=2), [x])
    compare(lambda t: F.interpolate(t, size=(4, 7)), lambda t: TF.interpolate(t, size=(4, 7)), [x])
    compare(lambda t: F.interpolate(t, size=(2, 3)), lambda t: TF.interpolate(t, size=(2, 3)), [x])


def _load(em, tm):
    em.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})


def test_embedding(rng):
    e, t = nn.Embedding(11, 4, padding_idx=3), torch.nn.Embedding(11, 4, padding_idx=3)
    t.double()
    _load(e, t)
    idx = np.array([[1, 3, 10], [3, 0, 1]])
    oe, ot = e(engine.tensor(idx)), t(torch.tensor(idx))
    np.testing.assert_allclose(oe.numpy(), ot.detach().numpy(), rtol=1e-6)
    w = rng.uniform(0.5, 1.5, size=ot.shape)
    (oe * engine.tensor(w.astype(np.float32))).sum().backward()
    (ot * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(e.weight.grad.numpy(), t.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert e.weight.numpy()[3].tolist() == [0, 0, 0, 0]
    assert list(nn.Embedding(5, 2).state_dict()) == list(torch.nn.Embedding(5, 2).state_dict())


@pytest.mark.parametrize("batch_first,masks", [(False, "causal"), (True, "padding")])
def test_multihead_attention(rng, batch_first, masks):
    m, tm = nn.MultiheadAttention(8, 2, batch_first=batch_first), torch.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    tm.double()
    assert list(m.state_dict()) == list(tm.state_dict())
    _load(m, tm)
    shape = (2, 5, 8) if batch_first else (5, 2, 8)
    x = _inp(rng, shape)
    kw_e, kw_t = {}, {}
    if masks == "causal":
        cm = np.triu(np.ones((5, 5), bool), 1)
        kw_e["attn_mask"], kw_t["attn_mask"] = engine.tensor(cm), torch.tensor(cm)
    elif masks == "padding":
        kp = np.zeros((2, 5), bool)
        kp[1, 3:] = True
        kw_e["key_padding_mask"], kw_t["key_padding_mask"] = engine.tensor(kp), torch.tensor(kp)
    compare(lambda a: m(a, a, a, **kw_e)[0], lambda a: tm(a, a, a, **kw_t)[0], [x], rtol=2e-5, atol=2e-6)
    we = m(engine.tensor(x), engine.tensor(x), engine.tensor(x), **kw_e)[1]
    wt = tm(torch.tensor(x, dtype=torch.float64), torch.tensor(x, dtype=torch.float64), torch.tensor(x, dtype=torch.float64), **kw_t)[1]
    np.testing.assert_allclose(we.numpy(), wt.detach().numpy(), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("groups,padding,stride", [(1, "same", 1), (3, 1, 2)])
def test_conv2d_groups_same(rng, groups, padding, stride):
    m, tm = nn.Conv2d(3, 6, (3, 2), stride, padding, groups=groups), \
        torch.nn.Conv2d(3, 6, (3, 2), stride, padding, groups=groups)
    tm.double()
    _load(m, tm)
    compare(m, tm, [_inp(rng, (2, 3, 5, 7))], rtol=3e-5, atol=3e-6)


def test_conv1d(rng):
    m, tm = nn.Conv1d(4, 4, 3, padding="same", groups=2, dilation=2), torch.nn.Conv1d(4, 4, 3, padding="same", groups=2, dilation=2)
    tm.double()
    _load(m, tm)
    compare(m, tm, [_inp(rng, (1, 4, 7))], rtol=3e-5, atol=3e-6)


def test_pooling(rng):
    x = _inp(rng, (2, 3, 7, 5))
    compare(lambda t: F.adaptive_avg_pool2d(t, (3, 2)), lambda t: TF.adaptive_avg_pool2d(t, (3, 2)), [x])
    compare(lambda t: F.adaptive_avg_pool2d(t, 1), lambda t: TF.adaptive_avg_pool2d(t, 1), [x])
    compare(nn.AdaptiveAvgPool2d((7, 1)), torch.nn.AdaptiveAvgPool2d((7, 1)), [x])
    compare(lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: TF.max_pool2d(t, 3, 2, 1), [x])
    compare(lambda t: F.adaptive_avg_pool1d(t, 3), lambda t: TF.adaptive_avg_pool1d(t, 3), [_inp(rng, (2, 3, 7))])


def test_batchnorm_state_dict_names_and_counter(rng):
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    tm = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Flatten(),
                             torch.nn.Linear(12, 2))
    assert list(m.state_dict()) == list(tm.state_dict())
    _load(m, tm)
    x = _inp(rng, (4, 2, 4, 4))
    for _ in range(2):
        m(engine.tensor(x))
        tm(torch.tensor(x))
    sd = m.state_dict()
    assert sd["1.num_batches_tracked"].dtype == "int64" and sd["1.num_batches_tracked"].item() == 2
    np.testing.assert_allclose(sd["1.running_var"].numpy(), tm.state_dict()["1.running_var"].numpy(), rtol=1e-5)
    m.eval(), tm.eval()
    np.testing.assert_allclose(m(engine.tensor(x)).numpy(), tm(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    # strict=False reports, strict raises
    r = m.load_state_dict({"0.weight": sd["0.weight"].numpy(), "extra": np.zeros(1)}, strict=False)
    assert "extra" in r.unexpected_keys and "0.bias" in r.missing_keys
    with pytest.raises(KeyError):
        m.load_state_dict({"0.weight": sd["0.weight"].numpy()})


def test_load_state_dict_keeps_bool_buffers():
    """issue 9: a bool tril causal mask came back in another order after load_state_dict."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 3)
            self.register_buffer("mask", engine.tensor(np.tril(np.ones((5, 5), bool))))
            self.register_buffer("count", engine.full((), 7, "int64").realize())

    a, b = Block(), Block()
    b.register_buffer("mask", engine.tensor(np.zeros((5, 5), bool)))
    b.register_buffer("count", engine.full((), 0, "int64").realize())
    b.load_state_dict(a.state_dict())
    assert b.mask.dtype == "bool" and np.array_equal(b.mask.numpy(), np.tril(np.ones((5, 5), bool)))
    assert b.count.dtype == "int64" and b.count.item() == 7
    # from torch tensors too
    b.load_state_dict({"proj.weight": torch.ones(3, 3), "proj.bias": torch.zeros(3),
                       "mask": torch.triu(torch.ones(5, 5, dtype=torch.bool)), "count": torch.tensor(3)})
    assert np.array_equal(b.mask.numpy(), np.triu(np.ones((5, 5), bool))) and b.count.item() == 3


def test_module_containers_and_helpers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(3, 4), nn.Linear(4, 2)])
            self.heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 1, bias=False)})

        def forward(self, x):
            for layer in self.layers:
                x = layer(x).relu()
            return self.heads["a"](x) + self.heads["b"](x)

    class TNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)])
            self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1), "b": torch.nn.Linear(2, 1, bias=False)})

    net, tnet = Net(), TNet()
    assert list(net.state_dict()) == list(tnet.state_dict())
    assert len(net.layers) == 2 and "a" in net.heads and len(net.parameters()) == 7
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 4
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    assert net.to("cpu") is net and net.to(engine.dtypes.float32) is net
    with pytest.raises(TypeError):
        net.to(engine.dtypes.long)
    assert net(engine.ones(2, 3)).shape == (2, 1)


def test_clip_grad_norm(rng):
    ws = [_inp(rng, (3, 4)), _inp(rng, (5,))]
    pe = [engine.tensor(w, requires_grad=True) for w in ws]
    pt = [torch.tensor(w, requires_grad=True) for w in ws]
    for p in pe + pt:
        (p * p * 3).sum().backward()
    for mx, nt in [(1.0, 2.0), (0.5, float("inf"))]:
        ge = [engine.tensor(p.grad.numpy(), requires_grad=False) for p in pe]
        for p, g in zip(pe, ge):
            p.grad = g
        gt = [p.grad.clone() for p in pt]
        for p, g in zip(pt, gt):
            p.grad = g
        te = nn.utils.clip_grad_norm_(pe, mx, nt)
        tt = torch.nn.utils.clip_grad_norm_(pt, mx, nt)
        np.testing.assert_allclose(te.item(), tt.item(), rtol=1e-5)
        for a, b in zip(pe, pt):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-7)
    nn.utils.clip_grad_value_(pe, 0.01)
    torch.nn.utils.clip_grad_value_(pt, 0.01)
    for a, b in zip(pe, pt):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-6)


def _sched_pairs():
    E, T = lr_scheduler, torch.optim.lr_scheduler
    return [
        (lambda o: E.StepLR(o, 3, 0.5), lambda o: T.StepLR(o, 3, 0.5)),
        (lambda o: E.MultiStepLR(o, [2, 5], 0.3), lambda o: T.MultiStepLR(o, [2, 5], 0.3)),
        (lambda o: E.CosineAnnealingLR(o, 7, 1e-3), lambda o: T.CosineAnnealingLR(o, 7, 1e-3)),
        (lambda o: E.LambdaLR(o, lambda e: 1 / (e + 1)), lambda o: T.LambdaLR(o, lambda e: 1 / (e + 1))),
        (lambda o: E.LinearLR(o, 0.1, 1.0, 4), lambda o: T.LinearLR(o, 0.1, 1.0, 4)),
        (lambda o: E.ExponentialLR(o, 0.9), lambda o: T.ExponentialLR(o, 0.9)),
        (lambda o: E.ConstantLR(o, 0.5, 3), lambda o: T.ConstantLR(o, 0.5, 3)),
        (lambda o: E.PolynomialLR(o, 6, 2.0), lambda o: T.PolynomialLR(o, 6, 2.0)),
        (lambda o: E.OneCycleLR(o, 0.5, total_steps=12), lambda o: T.OneCycleLR(o, 0.5, total_steps=12)),
        (lambda o: E.OneCycleLR(o, 0.5, total_steps=12, three_phase=True, anneal_strategy="linear"),
         lambda o: T.OneCycleLR(o, 0.5, total_steps=12, three_phase=True, anneal_strategy="linear")),
        (lambda o: E.SequentialLR(o, [E.LinearLR(o, 0.1, total_iters=3), E.CosineAnnealingLR(o, 8)], [3]),
         lambda o: T.SequentialLR(o, [T.LinearLR(o, 0.1, total_iters=3), T.CosineAnnealingLR(o, 8)], [3])),
        (lambda o: E.CosineAnnealingWarmRestarts(o, 3, 2), lambda o: T.CosineAnnealingWarmRestarts(o, 3, 2)),
    ]


@pytest.mark.parametrize("i", range(12))
def test_lr_schedulers_match_torch(i):
    fe, ft = _sched_pairs()[i]
    pe = engine.tensor(np.ones(2, np.float32), requires_grad=True)
    oe = engine.optim.SGD([pe], lr=0.1, momentum=0.9)
    ot = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
    se, st = fe(oe), ft(ot)
    for step in range(11):
        assert oe.param_groups[0]["lr"] == pytest.approx(ot.param_groups[0]["lr"], rel=1e-9, abs=1e-12), f"step {step}"
        assert se.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-9, abs=1e-12)
        if "momentum" in ot.param_groups[0]:
            assert oe.param_groups[0]["momentum"] == pytest.approx(ot.param_groups[0]["momentum"])
        ot.step()
        se.step(), st.step()


def test_reduce_lr_on_plateau():
    pe = engine.tensor(np.ones(2, np.float32), requires_grad=True)
    oe = engine.optim.SGD([pe], lr=0.1)
    ot = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    se = lr_scheduler.ReduceLROnPlateau(oe, patience=1, factor=0.5)
    st = torch.optim.lr_scheduler.ReduceLROnPlateau(ot, patience=1, factor=0.5)
    for m in [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8]:
        se.step(m), st.step(m)
        assert oe.param_groups[0]["lr"] == pytest.approx(ot.param_groups[0]["lr"])


@pytest.mark.parametrize("make_e,make_t", [
    (lambda p: RMSprop(p, lr=0.01), lambda p: torch.optim.RMSprop(p, lr=0.01)),
    (lambda p: RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=0.1),
     lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    (lambda p: Adagrad(p, lr=0.1), lambda p: torch.optim.Adagrad(p, lr=0.1)),
    (lambda p: Adagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.05),
     lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.05)),
], ids=["rmsprop", "rmsprop_centered_momentum", "adagrad", "adagrad_options"])
def test_rmsprop_adagrad(rng, make_e, make_t):
    w0 = _inp(rng, (3, 5))
    pe = engine.tensor(w0, requires_grad=True)
    pt = torch.tensor(w0.astype(np.float64), requires_grad=True)
    oe, ot = make_e([pe]), make_t([pt])
    for k in range(4):
        oe.zero_grad(), ot.zero_grad()
        c = np.float32(1 + 0.25 * k)
        ((pe * pe * pe).sum() + pe.sum() * c).backward()
        ((pt * pt * pt).sum() + pt.sum() * float(c)).backward()
        oe.step(), ot.step()
    np.testing.assert_allclose(pe.numpy(), pt.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_adagrad_state_dict_matches_torch_before_and_after_a_step(rng):
    """torch's Adagrad holds its sums (initial_accumulator_value) and step 0 from
    construction: a state saved before the first step has them, and loads either way."""
    w0 = _inp(rng, (3, 5))
    pe = engine.tensor(w0, requires_grad=True)
    pt = torch.tensor(w0, requires_grad=True)
    oe, ot = Adagrad([pe], lr=0.1, initial_accumulator_value=0.25), torch.optim.Adagrad([pt], lr=0.1,
                                                                                       initial_accumulator_value=0.25)
    for k in range(2):
        se, st = oe.state_dict()["state"], ot.state_dict()["state"]
        assert set(se) == set(st) == {0} and set(se[0]) == set(st[0]) == {"step", "sum"}
        assert float(se[0]["step"]) == float(st[0]["step"]) == k
        np.testing.assert_allclose(se[0]["sum"], st[0]["sum"].numpy(), rtol=1e-6)
        ((pe * pe).sum() * 0.5 + pe.sum()).backward()
        ((pt * pt).sum() * 0.5 + pt.sum()).backward()
        oe.step(), ot.step()
    fresh = Adagrad([engine.tensor(w0, requires_grad=True)], lr=0.1)
    fresh.load_state_dict(oe.state_dict())            # the saved sums replace the fresh ones
    np.testing.assert_allclose(fresh.state_dict()["state"][0]["sum"], ot.state_dict()["state"][0]["sum"].numpy(),
                               rtol=1e-5)


def test_cross_entropy_target_check_also_in_a_compiled_step():
    m = nn.Linear(4, 3)
    opt = engine.optim.SGD(m.parameters(), lr=0.1)

    @engine.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss

    x = engine.tensor(np.ones((2, 4), np.float32))
    step(x, engine.tensor([0, 2]))
    step(x, engine.tensor([1, 2]))            # a replay
    with pytest.raises(IndexError, match="target 7"):
        step(x, engine.tensor([1, 7]))
    with pytest.raises(IndexError, match="target 3"):
        step(x, np.array([3, 0]))            # numpy targets, copied into the traced input
    with pytest.raises(IndexError, match="target -1"):
        step(x, engine.tensor([0, 1]).reshape(1, 2).reshape(2) - 1)     # computed: no known range


def test_cross_entropy_target_check_downloads_nothing_for_host_targets(monkeypatch):
    """Targets made from host data carry their range: the check reads no device memory
    (a download would wait for every kernel queued before it), plain or replayed."""
    m = nn.Linear(4, 3)
    opt = engine.optim.SGD(m.parameters(), lr=0.1)
    x = engine.tensor(np.ones((2, 4), np.float32))

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss
    compiled, compiled_np = engine.compile(step), engine.compile(step)
    compiled(x, engine.tensor([0, 2]))
    compiled_np(x, np.array([0, 2]))      # traced with host targets (a trace downloads its inputs)
    downloads = []
    dev = x.device
    real = type(dev).download
    monkeypatch.setattr(type(dev), "download", lambda self, *a, **k: downloads.append(1) or real(self, *a, **k))
    step(x, engine.tensor([1, 2]))
    compiled(x, engine.tensor([2, 0]))
    compiled_np(x, np.array([1, 1]))
    assert downloads == []
    with pytest.raises(IndexError, match="target 3"):
        step(x, engine.tensor([3, 0]))


def test_nn_init_and_utils_data_alias():
    engine.manual_seed(0)
    lin = nn.Linear(200, 300)
    nn.init.xavier_uniform_(lin.weight)
    w = lin.weight.numpy()
    bound = math.sqrt(6.0 / 500)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    nn.init.normal_(lin.weight, 0.0, 0.02)
    assert abs(lin.weight.numpy().std() - 0.02) < 0.001
    nn.init.zeros_(lin.bias)
    assert not lin.bias.numpy().any() and lin.bias.requires_grad
    nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
    assert abs(lin.weight.numpy().std() - math.sqrt(2 / 200)) < 0.005
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.2))
    from engine.utils.data import DataLoader, TensorDataset
    xb, = next(iter(DataLoader(TensorDataset(np.arange(6, dtype=np.float32)), batch_size=4)))
    assert xb.numpy().tolist() == [0, 1, 2, 3]
