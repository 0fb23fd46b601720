"""Optimizers. Each parameter's update is one fused kernel that writes the parameter and
its state buffers in place, with the learning rate and step-dependent factors passed as
scalar arguments (so changing them never recompiles, and a compiled step replays them).
"""
from __future__ import annotations

import math

import numpy as np

from . import realize as rz
from .tensor import Tensor, tensor, no_grad, realize_all

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups = [dict(defaults, params=self.params)]
        self.state: dict = {i: {} for i in range(len(self.params))}
        self.step_count = 0
        self._vars: dict = {}

    @property
    def defaults(self):
        return {k: v for k, v in self.param_groups[0].items() if k != "params"}

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def _var(self, name, value) -> Tensor:
        if name not in self._vars:
            self._vars[name] = rz.Var(value)
        v = self._vars[name]
        v.value = value
        return Tensor(v.node, self.params[0].device)

    def _buffer(self, i, name) -> Tensor:
        st = self.state[i]
        if name not in st:
            p = self.params[i]
            st[name] = tensor(np.zeros(p.shape, np.float32), device=p.device)
        return st[name]

    def step(self):
        realize_all(*[p.grad for p in self.params])
        rz.record_host_action(self._advance)
        with no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                self._write(self._update(i, p, p.grad), p.device)

    @staticmethod
    def _write(updates, device):
        """One fused kernel writes every new value; each tensor's storage takes its value
        in place (a new version), so nothing computed from the old values is reused."""
        pairs = []
        for t, new in updates:
            if t._view:
                raise RuntimeError("optimizer: a parameter or state tensor is a view; pass the base tensor")
            if not t._storage.realized:
                t.realize()
            pairs.append((t._storage, new.node))
        del updates
        rz.write_storages(pairs, device, group=True)

    def _advance(self):
        """One step on the host: count it and set the step's scalars. A replayed compiled
        step runs this too, so counters and bias corrections keep advancing."""
        self.step_count += 1
        self._set_scalars(self.step_count)

    def _set_scalars(self, t):
        raise NotImplementedError

    def _update(self, i, p, g):
        raise NotImplementedError

    def state_dict(self) -> dict:
        state = {}
        for i, st in self.state.items():
            if st:
                state[i] = {k: v.numpy() for k, v in st.items()}
        return {"param_groups": [self.defaults | {"step_count": self.step_count}], "state": state}

    def load_state_dict(self, sd: dict):
        group = dict(sd["param_groups"][0])
        self.step_count = int(group.pop("step_count", 0))
        self.param_groups[0].update(group)
        for i, st in sd.get("state", {}).items():
            i = int(i)
            for k, v in st.items():
                self._buffer(i, k).assign_(tensor(np.asarray(v, np.float32), device=self.params[i].device))


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))
        self._lr, self._mom, self._damp = self._var("lr", lr), self._var("mom", 0.0), self._var("damp", 1.0)

    def _set_scalars(self, t):
        g = self.param_groups[0]
        self._vars["lr"].value = g["lr"]
        # PyTorch starts the momentum buffer at the first gradient, undampened
        self._vars["mom"].value = 0.0 if t == 1 else g["momentum"]
        self._vars["damp"].value = 1.0 if t == 1 else 1.0 - g["dampening"]

    def _update(self, i, p, g):
        grp = self.param_groups[0]
        if grp["weight_decay"]:
            g = g + p * grp["weight_decay"]
        if grp["momentum"]:
            buf = self._buffer(i, "momentum_buffer")
            new_buf = buf * self._mom + g * self._damp
            d = g + new_buf * grp["momentum"] if grp["nesterov"] else new_buf
            return [(p, p - d * self._lr), (buf, new_buf)]
        return [(p, p - g * self._lr)]


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._step_size = self._var("step_size", 0.0)
        self._inv_sqrt_bc2 = self._var("inv_sqrt_bc2", 1.0)
        self._lr = self._var("lr", lr)

    def _set_scalars(self, t):
        g = self.param_groups[0]
        b1, b2 = g["betas"]
        self._vars["step_size"].value = g["lr"] / (1 - b1 ** t)
        self._vars["inv_sqrt_bc2"].value = 1.0 / math.sqrt(1 - b2 ** t)
        self._vars["lr"].value = g["lr"]

    def _update(self, i, p, g):
        grp = self.param_groups[0]
        b1, b2 = grp["betas"]
        wd = grp["weight_decay"]
        m, v = self._buffer(i, "exp_avg"), self._buffer(i, "exp_avg_sq")
        base = p
        if wd and self._decoupled:
            base = p * (1.0 - self._lr * wd)
        elif wd:
            g = g + p * wd
        new_m = m * b1 + g * (1 - b1)
        new_v = v * b2 + g * g * (1 - b2)
        denom = new_v.sqrt() * self._inv_sqrt_bc2 + grp["eps"]
        return [(p, base - new_m * self._step_size / denom), (m, new_m), (v, new_v)]


class AdamW(Adam):
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
