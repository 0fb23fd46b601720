"""Activation layers: ReLU, GELU, SiLU, Mish, ... Softmax, LogSoftmax, Tanh, Sigmoid."""
from __future__ import annotations

from . import functional as F
from .module import Module


class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return x.relu()


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class _Act(Module):
    fn = None

    def forward(self, x):
        return type(self).fn(x)


class SiLU(_Act):
    fn = staticmethod(F.silu)


class Mish(_Act):
    fn = staticmethod(F.mish)


class ReLU6(_Act):
    fn = staticmethod(F.relu6)


class Hardswish(_Act):
    fn = staticmethod(F.hardswish)


class Hardsigmoid(_Act):
    fn = staticmethod(F.hardsigmoid)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(-1 if self.dim is None else self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return x.log_softmax(-1 if self.dim is None else self.dim)


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()
