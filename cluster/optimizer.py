"""Optimizer update on the host, in float32 numpy, identical on every node.

Every node applies the same update to the same all-reduced gradient with the same
element-wise float32 operations (no reductions, no library kernels that may pick a
different summation order), so weights stay bitwise identical across the ring.
Formulas follow torch.optim.SGD and torch.optim.Adam.
"""
from __future__ import annotations

import math

import numpy as np

F = np.float32


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
        self._tmp = None

    def _scratch(self, like: np.ndarray):
        """Two float32 arrays shaped like `like`, views of buffers kept between steps."""
        if self._tmp is None or self._tmp[0].size < like.size:
            self._tmp = [np.empty(like.size, F), np.empty(like.size, F)]
        return [t[:like.size].reshape(like.shape) for t in self._tmp]

    def load(self, state: list, t: int) -> None:
        if len(state) != len(self.state) or any(a.shape != b.shape for a, b in zip(state, self.state)):
            raise OptimizerError(f"{self.name}: optimizer state does not match the parameters")
        self.state, self.t = [np.array(a, F) for a in state], int(t)

    def update(self, params: list, grads: list) -> None:
        """In place."""
        self.t += 1
        s = self.spec
        lr, wd = F(s["lr"]), F(s.get("weight_decay", 0.0))
        n = len(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + wd * p if wd else g
            if self.name == "sgd":
                mom = F(s.get("momentum", 0.0))
                if mom:
                    buf = self.state[i]
                    if self.t == 1:
                        buf[...] = g
                    else:
                        buf *= mom
                        buf += g
                    g = g + mom * buf if s.get("nesterov") else buf
                p -= np.multiply(g, lr, out=self._scratch(p)[0])
            else:
                b1, b2 = (F(b) for b in s.get("betas", (0.9, 0.999)))
                m, v = self.state[i], self.state[n + i]
                # the same float32 operations as m = b1*m + (1-b1)*g etc., written into two
                # scratch arrays: temporaries were half of a step's host time (bench/NOTES.md)
                t1, t2 = self._scratch(p)
                m *= b1
                m += np.multiply(g, F(1) - b1, out=t1)
                v *= b2
                np.multiply(g, g, out=t1)
                t1 *= F(1) - b2
                v += t1
                # bias corrections are scalars: computed once in float64, then rounded
                bc1 = F(1 - s.get("betas", (0.9, 0.999))[0] ** self.t)
                bc2_sqrt = F(math.sqrt(1 - s.get("betas", (0.9, 0.999))[1] ** self.t))
                denom = np.sqrt(v, out=t1)
                denom /= bc2_sqrt
                denom += F(s.get("eps", 1e-8))
                step = np.multiply(m, lr / bc1, out=t2)
                step /= denom
                p -= step
