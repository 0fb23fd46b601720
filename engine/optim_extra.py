"""RMSprop and Adagrad, following the pattern of SGD/Adam in ``engine.optim`` (one fused
update per parameter; the learning rate and step-dependent factors are scalar kernel
arguments, so changing them never recompiles). Formulas are torch's."""
from __future__ import annotations

import numpy as np

from .optim import Optimizer
from .tensor import tensor

__all__ = ["RMSprop", "Adagrad"]


class RMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        if lr < 0 or eps < 0 or momentum < 0 or not 0 <= alpha:
            raise ValueError(f"RMSprop: invalid lr={lr}, alpha={alpha}, eps={eps} or momentum={momentum}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))
        self._lr = self._var("lr", lr)

    def _set_scalars(self, t):
        self._vars["lr"].value = self.param_groups[0]["lr"]

    def _update(self, i, p, g):
        grp = self.param_groups[0]
        alpha, eps, wd, mom = grp["alpha"], grp["eps"], grp["weight_decay"], grp["momentum"]
        if wd:
            g = g + p * wd
        sq = self._buffer(i, "square_avg")
        new_sq = sq * alpha + g * g * (1 - alpha)
        out = [(sq, new_sq)]
        if grp["centered"]:
            ga = self._buffer(i, "grad_avg")
            new_ga = ga * alpha + g * (1 - alpha)
            avg = (new_sq - new_ga * new_ga).sqrt() + eps
            out.append((ga, new_ga))
        else:
            avg = new_sq.sqrt() + eps
        if mom > 0:
            buf = self._buffer(i, "momentum_buffer")
            new_buf = buf * mom + g / avg
            out.append((buf, new_buf))
            return [(p, p - new_buf * self._lr)] + out
        return [(p, p - g / avg * self._lr)] + out


class Adagrad(Optimizer):
    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        if lr < 0 or lr_decay < 0 or initial_accumulator_value < 0 or eps < 0:
            raise ValueError(f"Adagrad: invalid lr={lr}, lr_decay={lr_decay}, initial_accumulator_value="
                             f"{initial_accumulator_value} or eps={eps}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))
        self._clr = self._var("clr", lr)

    def _set_scalars(self, t):
        g = self.param_groups[0]
        self._vars["clr"].value = g["lr"] / (1 + (t - 1) * g["lr_decay"])

    def _buffer(self, i, name):
        st = self.state[i]
        if name == "sum" and name not in st:
            p = self.params[i]
            st[name] = tensor(np.full(p.shape, self.param_groups[0]["initial_accumulator_value"], np.float32),
                              device=p.device)
        return super()._buffer(i, name)

    def _update(self, i, p, g):
        grp = self.param_groups[0]
        if grp["weight_decay"]:
            g = g + p * grp["weight_decay"]
        s = self._buffer(i, "sum")
        new_s = s + g * g
        return [(p, p - g / (new_s.sqrt() + grp["eps"]) * self._clr), (s, new_s)]
