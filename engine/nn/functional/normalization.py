"""Layer and batch normalization, dropout."""
from __future__ import annotations

from ...tensor import Tensor, device_rand
from .conv import _pair


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
