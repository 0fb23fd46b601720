"""Optimizer update on the host, in float32 numpy, identical on every node.

Every node applies the same update to the same all-reduced gradient with the same
element-wise float32 operations (no reductions, no library kernels that may pick a
different summation order), so weights stay bitwise identical across the ring.
Formulas follow torch.optim.SGD and torch.optim.Adam.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from . import hostpool

F = np.float32
_local = threading.local()


def _scratch(n: int) -> list[np.ndarray]:
    """Two float32 scratch arrays of n elements, kept per thread between steps."""
    if getattr(_local, "size", 0) < n:
        _local.size, _local.bufs = n, [np.empty(n, F), np.empty(n, F)]
    return [b[:n] for b in _local.bufs]


class OptimizerError(ValueError):
    pass


_SPECS = {"sgd": {"lr", "momentum", "weight_decay", "nesterov"},
          "adam": {"lr", "betas", "eps", "weight_decay"}}


def check_spec(spec: dict) -> dict:
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in _SPECS:
        raise OptimizerError(f"optimizer spec {spec!r}: name must be one of {sorted(_SPECS)}")
    extra = set(spec) - _SPECS[name] - {"name"}
    if extra:
        raise OptimizerError(f"optimizer {name}: unknown settings {sorted(extra)}")
    if not isinstance(spec.get("lr"), (int, float)) or not spec["lr"] > 0:
        raise OptimizerError(f"optimizer {name}: lr must be a positive number")
    return spec


class HostOptimizer:
    def __init__(self, spec: dict, shapes):
        self.spec = check_spec(dict(spec))
        self.name = spec["name"]
        self.t = 0
        n_slots = {"sgd": 1 if spec.get("momentum", 0) else 0, "adam": 2}[self.name]
        self.state = [np.zeros(s, F) for _ in range(n_slots) for s in shapes]

    def load(self, state: list, t: int) -> None:
        if len(state) != len(self.state) or any(a.shape != b.shape for a, b in zip(state, self.state)):
            raise OptimizerError(f"{self.name}: optimizer state does not match the parameters")
        self.state, self.t = [np.array(a, F) for a in state], int(t)

    def update(self, params: list, grads: list) -> None:
        """In place.  Element-wise, so it runs on fixed pieces of the tensors in parallel
        (hostpool), with results identical to one pass over each whole tensor."""
        self.t += 1
        s, n = self.spec, len(params)
        if self.name == "sgd":
            k = {"lr": F(s["lr"]), "wd": F(s.get("weight_decay", 0.0)), "mom": F(s.get("momentum", 0.0)),
                 "nesterov": bool(s.get("nesterov")), "first": self.t == 1}
            slots = [(self.state[i],) if k["mom"] else () for i in range(n)]
            work = _sgd
        else:
            b1, b2 = s.get("betas", (0.9, 0.999))
            # bias corrections are scalars: computed once in float64, then rounded
            k = {"lr": F(s["lr"]), "wd": F(s.get("weight_decay", 0.0)), "b1": F(b1), "b2": F(b2),
                 "eps": F(s.get("eps", 1e-8)), "bc1": F(1 - b1 ** self.t), "bc2_sqrt": F(math.sqrt(1 - b2 ** self.t))}
            slots = [(self.state[i], self.state[n + i]) for i in range(n)]
            work = _adam
        hostpool.run(lambda piece: work(k, *piece),
                     [piece for p, g, st in zip(params, grads, slots) for piece in hostpool.split(p, g, *st)])


def _sgd(k, p, g, buf=None):
    g = g + k["wd"] * p if k["wd"] else g
    if buf is not None:
        if k["first"]:
            buf[...] = g
        else:
            buf *= k["mom"]
            buf += g
        g = g + k["mom"] * buf if k["nesterov"] else buf
    p -= np.multiply(g, k["lr"], out=_scratch(p.size)[0])


def _adam(k, p, g, m, v):
    g = g + k["wd"] * p if k["wd"] else g
    # the same float32 operations as m = b1*m + (1-b1)*g etc., written into two scratch
    # arrays: temporaries were half of a step's host time (bench/NOTES.md)
    t1, t2 = _scratch(p.size)
    m *= k["b1"]
    m += np.multiply(g, F(1) - k["b1"], out=t1)
    v *= k["b2"]
    np.multiply(g, g, out=t1)
    t1 *= F(1) - k["b2"]
    v += t1
    denom = np.sqrt(v, out=t1)
    denom /= k["bc2_sqrt"]
    denom += k["eps"]
    step = np.multiply(m, k["lr"] / k["bc1"], out=t2)
    step /= denom
    p -= step
