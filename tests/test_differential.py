"""Randomised differential test against PyTorch: generated programs mix creation, views,
in-place writes, optimizer steps (SGD, Adam, AdamW), re-evaluation of earlier expressions,
state-dict round trips through a file (every dtype) and backward passes; each runs in both
libraries from the same numbers and every value and gradient is compared.

CI runs a bounded number of programs; ``ENGINE_FUZZ_PROGRAMS=500 ./dev test
tests/test_differential.py`` runs more (``ENGINE_FUZZ_SEED`` picks the first seed). A
failing seed goes into ``SEED_CORPUS`` so it is checked on every commit from then on.
"""
import os

import numpy as np
import pytest

import engine
from engine import nn

torch = pytest.importorskip("torch")

SEED_CORPUS = [0, 1, 2, 3, 4, 5, 6, 7]
N_PROGRAMS = int(os.environ.get("ENGINE_FUZZ_PROGRAMS", "6"))
FIRST_SEED = int(os.environ.get("ENGINE_FUZZ_SEED", "1000"))
OPS_PER_PROGRAM = 18
SHAPES = [(3, 4), (4,), (2, 3, 4)]
RTOL, ATOL = 1e-4, 1e-5      # a program chains up to ~20 float32 ops


class Pair:
    """The same value in both libraries."""
    __slots__ = ("e", "t", "label")

    def __init__(self, e, t, label):
        self.e, self.t, self.label = e, t, label

    def check(self, log):
        ours, theirs = self.e.numpy(), self.t.detach().numpy()
        assert ours.shape == theirs.shape, f"{self.label}: shape {ours.shape} vs {theirs.shape}\n{log}"
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=f"{self.label}\n" + "\n".join(log))


class Holder(nn.Module):
    def __init__(self, params, buffers):
        super().__init__()
        for i, p in enumerate(params):
            setattr(self, f"p{i}", p)
        for name, b in buffers.items():
            self.register_buffer(name, b)


class Program:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.log = [f"seed {seed}"]
        self.pool: list[Pair] = []
        self.params: list[Pair] = []
        for i in range(self.rng.integers(1, 4)):
            shape = SHAPES[self.rng.integers(len(SHAPES))]
            how = self.rng.integers(3)
            if how == 0:     # the everyday idiom that once aliased every zeros() of that shape
                e, t = nn.Parameter(engine.zeros(*shape)), torch.nn.Parameter(torch.zeros(*shape))
            elif how == 1:
                e, t = nn.Parameter(engine.ones(*shape)), torch.nn.Parameter(torch.ones(*shape))
            else:
                a = self._array(shape)
                e, t = nn.Parameter(engine.tensor(a)), torch.nn.Parameter(torch.tensor(a))
            self.params.append(Pair(e, t, f"param{i}{shape}"))
            self.log.append(f"param{i} {shape} init {how}")
        self.data = {p.label: self._array(p.e.shape) for p in self.params}
        kind = ["sgd", "sgd_momentum", "adam", "adamw"][self.rng.integers(4)]
        self.log.append(f"optimizer {kind}")
        ep, tp = [p.e for p in self.params], [p.t for p in self.params]
        if kind == "sgd":
            self.opt, self.topt = engine.optim.SGD(ep, lr=0.1), torch.optim.SGD(tp, lr=0.1)
        elif kind == "sgd_momentum":
            self.opt = engine.optim.SGD(ep, lr=0.05, momentum=0.9, weight_decay=0.01)
            self.topt = torch.optim.SGD(tp, lr=0.05, momentum=0.9, weight_decay=0.01)
        elif kind == "adam":
            self.opt, self.topt = engine.optim.Adam(ep, lr=0.05), torch.optim.Adam(tp, lr=0.05)
        else:
            self.opt = engine.optim.AdamW(ep, lr=0.05, weight_decay=0.1)
            self.topt = torch.optim.AdamW(tp, lr=0.05, weight_decay=0.1)

    def _array(self, shape):
        return (self.rng.uniform(0.3, 1.5, shape) * self.rng.choice([-1, 1], shape)).astype(np.float32)

    def _pick(self, pred=lambda p: True):
        cands = [p for p in self.pool + self.params if pred(p)]
        return cands[self.rng.integers(len(cands))] if cands else None

    def _add(self, e, t, label):
        self.pool.append(Pair(e, t, label))
        self.log.append(f"v{len(self.pool) - 1} = {label}")

    # --- actions -----------------------------------------------------------------------
    def new(self):
        shape = SHAPES[self.rng.integers(len(SHAPES))]
        how = self.rng.integers(4)
        if how == 0:
            a = self._array(shape)
            self._add(engine.tensor(a), torch.tensor(a), f"tensor{shape}")
        elif how == 1:
            self._add(engine.zeros(*shape), torch.zeros(*shape), f"zeros{shape}")
        elif how == 2:
            self._add(engine.ones(*shape), torch.ones(*shape), f"ones{shape}")
        else:
            self._add(engine.full(shape, 0.75), torch.full(shape, 0.75), f"full{shape}")

    def unary(self):
        x = self._pick()
        if x is None:
            return
        name = ["tanh", "relu", "neg", "sigmoid", "abs", "exp_tanh", "sq"][self.rng.integers(7)]
        f = {"tanh": lambda v: v.tanh(), "relu": lambda v: v.relu(), "neg": lambda v: -v,
             "sigmoid": lambda v: v.sigmoid(), "abs": lambda v: v.abs(), "exp_tanh": lambda v: v.tanh().exp(),
             "sq": lambda v: v * v}[name]
        self._add(f(x.e), f(x.t), f"{name}({x.label})")

    def binary(self):
        a = self._pick()
        if a is None:
            return
        b = self._pick(lambda p: p.e.shape == a.e.shape or p.e.shape == a.e.shape[-1:])
        name = ["add", "mul", "sub", "maximum"][self.rng.integers(4)]
        f = {"add": lambda x, y: x + y, "mul": lambda x, y: x * y, "sub": lambda x, y: x - y,
             "maximum": lambda x, y: x.maximum(y) if hasattr(x, "maximum") and not isinstance(x, torch.Tensor)
             else torch.maximum(x, y)}[name]
        self._add(f(a.e, b.e), f(a.t, b.t), f"{name}({a.label}, {b.label})")

    def reduce(self):
        x = self._pick(lambda p: p.e.ndim >= 1)
        if x is None:
            return
        dim = int(self.rng.integers(x.e.ndim))
        name = ["sum", "mean", "max"][self.rng.integers(3)]
        if name == "max":
            self._add(x.e.max(dim).values, x.t.max(dim).values, f"max({x.label}, {dim})")
        else:
            self._add(getattr(x.e, name)(dim), getattr(x.t, name)(dim), f"{name}({x.label}, {dim})")

    def matmul(self):
        a = self._pick(lambda p: p.e.shape in ((3, 4), (2, 3, 4)))
        b = self._pick(lambda p: p.e.shape == (4,) or p.e.shape == (3, 4))
        if a is None or b is None:
            return
        if b.e.shape == (3, 4):
            self._add(a.e @ b.e.T, a.t @ b.t.T, f"{a.label} @ {b.label}.T")
        else:
            self._add(a.e @ b.e, a.t @ b.t, f"{a.label} @ {b.label}")

    def view(self):
        x = self._pick(lambda p: p.e.ndim >= 1)
        if x is None:
            return
        nd = x.e.ndim
        opts = ["slice", "detach", "flat", "unsqueeze"] + (["T", "step"] if nd >= 2 else [])
        name = opts[self.rng.integers(len(opts))]
        f = {"slice": lambda v: v[1:], "detach": lambda v: v.detach(), "flat": lambda v: v.reshape(-1),
             "unsqueeze": lambda v: v.unsqueeze(0), "T": lambda v: v.transpose(-1, -2),
             "step": lambda v: v[..., ::2]}[name]
        self._add(f(x.e), f(x.t), f"{name}({x.label})")

    def inplace(self):
        x = self._pick(lambda p: not p.e.requires_grad and not p.t.requires_grad and p not in self.params)
        if x is None:
            return
        nd = x.e.ndim
        name = ["add_", "mul_", "sub_", "fill_", "zero_", "clamp_", "copy_", "iadd", "setitem",
                "masked_fill_"][self.rng.integers(10)]
        c = float(np.round(self.rng.uniform(0.5, 1.5), 3))
        if name == "copy_":
            src = self._pick(lambda p: p.e.shape == x.e.shape and p is not x)
            if src is None:
                return
            x.e.copy_(src.e.detach())
            x.t.copy_(src.t.detach())
            self.log.append(f"{x.label}.copy_({src.label})")
            return
        f = {"add_": lambda v: v.add_(c), "mul_": lambda v: v.mul_(c), "sub_": lambda v: v.sub_(c),
             "fill_": lambda v: v.fill_(c), "zero_": lambda v: v.zero_(),
             "clamp_": lambda v: v.clamp_(-c, c), "iadd": lambda v: v.__iadd__(c),
             "setitem": lambda v: v.__setitem__((slice(0, 1),) + (slice(None),) * (nd - 1), c),
             "masked_fill_": lambda v: v.masked_fill_(v > 0, c)}[name]
        if nd == 0 and name == "setitem":
            return
        f(x.e)
        f(x.t)
        self.log.append(f"{x.label}.{name}({c})")

    def param_inplace(self):
        p = self.params[self.rng.integers(len(self.params))]
        name = ["mul_", "iadd", "setitem"][self.rng.integers(3)]
        with engine.no_grad(), torch.no_grad():
            for v in (p.e, p.t):
                if name == "mul_":
                    v.mul_(0.9)
                elif name == "iadd":
                    v += 0.125
                else:
                    v[0] = 0.5
        self.log.append(f"with no_grad: {p.label}.{name}")

    def step(self):
        self.opt.zero_grad()
        self.topt.zero_grad()
        losses = []
        for lib, get in ((engine, lambda p: p.e), (torch, lambda p: p.t)):
            total = None
            for p in self.params:
                d = self.data[p.label]
                v = get(p)
                dt = engine.tensor(d) if lib is engine else torch.tensor(d)
                term = ((v * dt).tanh() * v).sum() + (v * v).mean() * 0.1
                total = term if total is None else total + term
            total.backward()
            losses.append(total)
        Pair(losses[0], losses[1], "loss").check(self.log)
        for p in self.params:
            Pair(p.e.grad, p.t.grad, f"grad of {p.label}").check(self.log)
        self.opt.step()
        self.topt.step()
        self.log.append("optimizer step")

    def state_roundtrip(self, tmp_path):
        """Save every dtype through a file, perturb, load back: values come back in order."""
        mask = np.tril(np.ones((4, 4), bool))
        buffers = {"mask": engine.tensor(mask), "count": engine.tensor(np.arange(5, dtype=np.int64) * 3),
                   "idx": engine.tensor(np.array([[4, 1], [2, 7]], np.int32))}
        holder = Holder([p.e for p in self.params], buffers)
        path = tmp_path / f"state{len(self.log)}.safetensors"
        before = {k: v.numpy().copy() for k, v in holder.state_dict().items()}
        engine.save(holder.state_dict(), path)
        with engine.no_grad():
            for p in self.params:
                p.e.mul_(3.0)
        holder.load_state_dict(engine.load(path))
        for k, v in holder.state_dict().items():
            np.testing.assert_array_equal(v.numpy(), before[k], err_msg=f"state_dict round trip of {k}")
        self.log.append("state_dict round trip")

    def check_some(self):
        items = self.pool + self.params
        for i in self.rng.choice(len(items), size=min(3, len(items)), replace=False):
            items[i].check(self.log)

    def run(self, n_ops, tmp_path):
        actions = [self.new, self.new, self.unary, self.binary, self.binary, self.reduce, self.matmul, self.view,
                   self.view, self.inplace, self.inplace, self.param_inplace, self.step, self.step, self.check_some]
        self.new()
        for _ in range(n_ops):
            act = actions[self.rng.integers(len(actions))]
            act()
            if self.rng.random() < 0.08:
                self.state_roundtrip(tmp_path)
        for p in self.pool + self.params:
            p.check(self.log)


@pytest.mark.parametrize("seed", SEED_CORPUS + list(range(FIRST_SEED, FIRST_SEED + N_PROGRAMS)))
def test_program_matches_torch(seed, tmp_path):
    engine.manual_seed(seed)
    Program(seed).run(OPS_PER_PROGRAM, tmp_path)
