"""Activations, softmax, normalize and cosine similarity."""
from __future__ import annotations

import math

from ... import ops
from ...tensor import Tensor


def relu(x):
    return x.relu()


def gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1.0 + ((x + 0.044715 * x * x * x) * math.sqrt(2.0 / math.pi)).tanh())
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x.gelu()


def silu(x):
    return x * x.sigmoid()


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (like torch)."""
    bx = x * beta if beta != 1 else x
    safe = bx.minimum(threshold)              # the unused branch never overflows (no NaN gradient)
    soft = (safe.exp() + 1.0).log() * (1.0 / beta)
    return (bx > threshold).where_(x, soft)


def mish(x):
    return x * softplus(x).tanh()


def leaky_relu(x, negative_slope=0.01):
    return (x > 0).where_(x, x * negative_slope)


def elu(x, alpha=1.0):
    return (x > 0).where_(x, (x.minimum(0.0).exp() - 1.0) * alpha)


def hardtanh(x, min_val=-1.0, max_val=1.0):
    return ops.clamp(x, min_val, max_val)


def relu6(x):
    return ops.clamp(x, 0.0, 6.0)


def hardsigmoid(x):
    return ops.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


def hardswish(x):
    return x * hardsigmoid(x)


def logsigmoid(x):
    return -((-x.abs()).exp() + 1.0).log() - (-x).relu()


def normalize(x: Tensor, p=2.0, dim=1, eps=1e-12) -> Tensor:
    """x / max(||x||_p over dim, eps)."""
    return x / ops.norm(x, p, dim, keepdim=True).maximum(eps)


def cosine_similarity(a: Tensor, b: Tensor, dim=1, eps=1e-8) -> Tensor:
    na = (a * a).sum(dim).sqrt().maximum(eps)
    nb = (b * b).sum(dim).sqrt().maximum(eps)
    return (a * b).sum(dim) / (na * nb)


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def softmax(x, dim=-1):
    return x.softmax(dim)


def log_softmax(x, dim=-1):
    return x.log_softmax(dim)
