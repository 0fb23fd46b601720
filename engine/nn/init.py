"""torch.nn.init: fill parameters in place from the engine's host RNG (``engine.manual_seed``),
with torch's fan-in / fan-out and gain conventions. Each returns the tensor."""
from __future__ import annotations

import math

import numpy as np

from ..tensor import host_rng, no_grad, tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_", "xavier_uniform_",
           "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_", "orthogonal_"]


def _fill(t, arr):
    with no_grad():
        t.copy_(tensor(np.asarray(arr, dtype=np.float32).reshape(t.shape), device=t.device))
    return t


def calculate_gain(nonlinearity, param=None):
    n = nonlinearity.lower()
    if n in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "sigmoid"):
        return 1.0
    if n == "tanh":
        return 5.0 / 3
    if n == "relu":
        return math.sqrt(2.0)
    if n == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if n == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fans(t):
    if t.ndim < 2:
        raise ValueError("fan in and fan out can not be computed for a tensor with fewer than 2 dimensions")
    receptive = math.prod(t.shape[2:]) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def uniform_(t, a=0.0, b=1.0):
    return _fill(t, host_rng().uniform(a, b, size=t.shape))


def normal_(t, mean=0.0, std=1.0):
    return _fill(t, host_rng().normal(mean, std, size=t.shape))


def trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
    rng = host_rng()
    out = rng.normal(mean, std, size=t.shape)
    bad = (out < a) | (out > b)
    while bad.any():
        out[bad] = rng.normal(mean, std, size=int(bad.sum()))
        bad = (out < a) | (out > b)
    return _fill(t, out)


def constant_(t, val):
    return _fill(t, np.full(t.shape, val))


def zeros_(t):
    return constant_(t, 0.0)


def ones_(t):
    return constant_(t, 1.0)


def eye_(t):
    if t.ndim != 2:
        raise ValueError("eye_: only 2-D tensors are supported")
    return _fill(t, np.eye(*t.shape))


def xavier_uniform_(t, gain=1.0):
    fi, fo = _fans(t)
    a = gain * math.sqrt(6.0 / (fi + fo))
    return uniform_(t, -a, a)


def xavier_normal_(t, gain=1.0):
    fi, fo = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fi + fo)))


def _kaiming_std(t, a, mode, nonlinearity):
    fi, fo = _fans(t)
    fan = fi if mode == "fan_in" else fo
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    bound = math.sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity)
    return uniform_(t, -bound, bound)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity))


def orthogonal_(t, gain=1.0):
    rows, cols = t.shape[0], math.prod(t.shape[1:])
    flat = host_rng().normal(0.0, 1.0, size=(rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(t, gain * q)
