"""Stateless layers, composed from Tensor ops (so their gradients come for free)."""
from __future__ import annotations

import math

from .. import ir
from ..tensor import Tensor, arange, device_rand

__all__ = ["linear", "conv2d", "max_pool2d", "avg_pool2d", "relu", "gelu", "sigmoid", "tanh",
           "softmax", "log_softmax", "cross_entropy", "mse_loss", "layer_norm", "batch_norm",
           "dropout", "one_hot"]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = x @ weight.T
    return out + bias if bias is not None else out


def conv2d(x: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1) -> Tensor:
    """Implicit GEMM: the im2col matrix is a view (pad + sliding window) that the GEMM
    reads through its index expression; it is never written to memory."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ir.ShapeError(f"conv2d: input {x.shape} and weight {weight.shape} must both be 4-D (N,C,H,W)/(O,C,KH,KW)")
    n, c, h, w = x.shape
    o, cw, kh, kw = weight.shape
    if c != cw:
        raise ir.ShapeError(f"conv2d: input has {c} channels (shape {x.shape}) but weight expects {cw} (shape {weight.shape})")
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    xp = x.pad(((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    win = xp.window((kh, kw), stride, dilation)                 # [N, C, OH, OW, KH, KW]
    oh, ow = win.shape[2], win.shape[3]
    cols = win.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    out = cols.matmul(weight.reshape(o, c * kh * kw).T, _pack_a=False)   # [N*OH*OW, O]
    out = out.reshape(n, oh, ow, o).permute(0, 3, 1, 2)
    return out + bias.reshape(1, o, 1, 1) if bias is not None else out


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    k = _pair(kernel_size)
    s = _pair(stride) if stride is not None else k
    if _pair(padding) != (0, 0):
        raise NotImplementedError("max_pool2d: padding > 0 is not supported yet")
    return x.window(k, s).max(dim=(-2, -1))


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    k = _pair(kernel_size)
    s = _pair(stride) if stride is not None else k
    p = _pair(padding)
    xp = x.pad(((0, 0),) * (x.ndim - 2) + ((p[0], p[0]), (p[1], p[1])))
    return xp.window(k, s).mean(dim=(-2, -1))


def relu(x):
    return x.relu()


def gelu(x):
    return x.gelu()


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def softmax(x, dim=-1):
    return x.softmax(dim)


def log_softmax(x, dim=-1):
    return x.log_softmax(dim)


def one_hot(target: Tensor, num_classes: int) -> Tensor:
    classes = arange(num_classes, device=target.device, dtype=target.dtype)
    return target.unsqueeze(-1).eq(classes).float()


def cross_entropy(logits: Tensor, target: Tensor, reduction="mean") -> Tensor:
    if logits.ndim != 2 or target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ir.ShapeError(f"cross_entropy: logits {logits.shape} must be [N, C] and target {target.shape} [N]")
    if target.dtype not in ("int32", "int64"):
        raise TypeError(f"cross_entropy: target must be integer class indices, got {target.dtype}")
    picked = (logits.log_softmax(1) * one_hot(target, logits.shape[1])).sum(1)
    if reduction == "none":
        return -picked
    return -(picked.sum() if reduction == "sum" else picked.mean())


def mse_loss(a: Tensor, b, reduction="mean") -> Tensor:
    d = a - b
    return (d * d).mean() if reduction == "mean" else (d * d).sum()


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None, eps=1e-5) -> Tensor:
    normalized_shape = _pair(normalized_shape) if not isinstance(normalized_shape, int) else (normalized_shape,)
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = x.mean(dims, keepdim=True)
    d = x - mean
    var = (d * d).mean(dims, keepdim=True)
    out = d * (var + eps).sqrt().reciprocal()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def batch_norm(x: Tensor, running_mean, running_var, weight=None, bias=None, training=True,
               momentum=0.1, eps=1e-5) -> Tensor:
    dims = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        mean = x.mean(dims, keepdim=True)
        d = x - mean
        var = (d * d).mean(dims, keepdim=True)
        if running_mean is not None:
            n = x.numel() // x.shape[1]
            running_mean.assign_(running_mean * (1 - momentum) + mean.detach().reshape(-1) * momentum)
            running_var.assign_(running_var * (1 - momentum) + var.detach().reshape(-1) * (momentum * n / max(n - 1, 1)))
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
        d = x - mean
    out = d * (var + eps).sqrt().reciprocal()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def dropout(x: Tensor, p=0.5, training=True) -> Tensor:
    if not training or p == 0:
        return x
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    keep = device_rand(x.shape, x.device) >= p
    return keep.where_(x * (1.0 / (1.0 - p)), 0.0)
