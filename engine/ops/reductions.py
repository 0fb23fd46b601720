"""Reductions (max/min with indices, sums, statistics, norms, all/any) composed from Tensor methods."""
from __future__ import annotations

import builtins
import math

import numpy as np

from ..dtypes import as_dtype
from ..tensor import Tensor, cat, full
from ._helpers import _T_MEAN, _T_SUM, _arange_along, _dim, _floatish, _MaxResult, _MinResult, _move_last
from .elementwise import _as_bool, isnan, logical_not, logical_or

# --- reductions -------------------------------------------------------------------------------

def amax(x: Tensor, dim=None, keepdim=False) -> Tensor:
    """The maximum over ``dim`` (an int or tuple; all dims if None): values only."""
    return x._reduce("RMAX", dim, keepdim)


def amin(x: Tensor, dim=None, keepdim=False) -> Tensor:
    if x.dtype == "bool":
        return logical_not(amax(logical_not(x), dim, keepdim))
    return -(amax(-x, dim, keepdim))


def _argext(x: Tensor, dim, keepdim, largest=True) -> Tensor:
    xd = x.detach()
    if dim is None:
        xd, dim = xd.reshape(-1), 0
    dim = _dim(dim, xd.ndim)
    n = xd.shape[dim]
    ext = amax(xd, dim, keepdim=True) if largest else amin(xd, dim, keepdim=True)
    pos = _arange_along(n, xd.ndim, dim, xd.device, "float32")
    hit = logical_or(xd.eq(ext), isnan(xd))
    first = amin(hit.where_(pos, float(n)), dim, keepdim)
    return first.long()


def argmax(x: Tensor, dim=None, keepdim=False) -> Tensor:
    """Index of the first maximum (like torch)."""
    return _argext(x, dim, keepdim, True)


def argmin(x: Tensor, dim=None, keepdim=False) -> Tensor:
    return _argext(x, dim, keepdim, False)


def _max_or_min(x: Tensor, dim, keepdim, largest: builtins.bool):
    if isinstance(dim, Tensor):
        return x.maximum(dim) if largest else x.minimum(dim)
    extreme = amax if largest else amin
    if dim is None:
        return extreme(x)
    if isinstance(dim, (tuple, list)):
        return extreme(x, tuple(dim), keepdim)
    result, arg = (_MaxResult, argmax) if largest else (_MinResult, argmin)
    return result(extreme(x, dim, keepdim), arg(x, dim, keepdim))


def max(x: Tensor, dim=None, keepdim=False, *, out=None):  # noqa: A001
    """torch.max: ``max(x)`` the overall maximum; ``max(x, dim)`` a named tuple
    ``(values, indices)``; ``max(x, other_tensor)`` the elementwise maximum."""
    return _max_or_min(x, dim, keepdim, True)


def min(x: Tensor, dim=None, keepdim=False, *, out=None):  # noqa: A001
    return _max_or_min(x, dim, keepdim, False)


def sum(x: Tensor, dim=None, keepdim=False, dtype=None):  # noqa: A001
    out = _T_SUM(x, dim, keepdim)
    return out.cast(as_dtype(dtype)) if dtype is not None else out


def mean(x: Tensor, dim=None, keepdim=False, dtype=None):
    return _T_MEAN(_floatish(x), dim, keepdim)


def var(x: Tensor, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """torch.var: ``correction`` (default 1) or the older ``unbiased`` flag."""
    if isinstance(unbiased, builtins.bool) or unbiased is None:
        c = 1 if correction is None else correction
        if unbiased is not None:
            c = 1 if unbiased else 0
    else:
        c = 1
    x = _floatish(x)
    axes = tuple(range(x.ndim)) if dim is None else ((dim,) if isinstance(dim, builtins.int) else tuple(dim))
    n = math.prod(x.shape[a] for a in axes) if x.ndim else 1
    d = x - x.mean(axes, keepdim=True)
    return (d * d).sum(axes, keepdim) * (1.0 / (n - c) if n - c > 0 else float("nan"))


def std(x: Tensor, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """torch.std (sqrt of :func:`var`)."""
    return var(x, dim, unbiased, keepdim, correction=correction).sqrt()


def prod(x: Tensor, dim=None, keepdim=False):
    """Product over ``dim``: a log-step tree of multiplications (exact for zeros and signs)."""
    if dim is None:
        x, dim = x.reshape(-1), 0
    dim = _dim(dim, x.ndim)
    y = _move_last(x, dim)
    while y.shape[-1] > 1:
        n = y.shape[-1]
        if n % 2:
            y = cat([y, full(y.shape[:-1] + (1,), 1, y.dtype, y.device)], -1)
            n += 1
        y = y[..., 0::2] * y[..., 1::2]
    y = _move_last(y, dim)
    return y if keepdim else y.squeeze(dim)


def logsumexp(x: Tensor, dim, keepdim=False):
    m = amax(x, dim, keepdim=True).detach()
    out = (x - m).exp().sum(dim, keepdim=True).log() + m
    return out if keepdim else out.reshape(tuple(s for i, s in enumerate(out.shape)
                                                 if i not in _axes_of(dim, x.ndim)))


def _axes_of(dim, ndim):
    dims = (dim,) if isinstance(dim, builtins.int) else tuple(dim)
    return {d % ndim for d in dims}


def norm(x: Tensor, p="fro", dim=None, keepdim=False):
    """Vector p-norms (2 / 'fro', 1, inf, other p) over ``dim`` (all dims if None)."""
    if p in ("fro", 2, 2.0):
        return (x * x).sum(dim, keepdim).sqrt()
    if p in (1, 1.0):
        return x.abs().sum(dim, keepdim)
    if p == float("inf"):
        return amax(x.abs(), dim, keepdim)
    return (x.abs() ** builtins.float(p)).sum(dim, keepdim) ** (1.0 / p)


def all(x: Tensor, dim=None, keepdim=False):  # noqa: A001
    return amin(_as_bool(x), dim, keepdim)


def any(x: Tensor, dim=None, keepdim=False):  # noqa: A001
    return amax(_as_bool(x), dim, keepdim)


def allclose(a, b, rtol=1e-5, atol=1e-8) -> builtins.bool:
    return builtins.bool(np.allclose(a.numpy(), b.numpy() if isinstance(b, Tensor) else b, rtol, atol))


def equal(a, b) -> builtins.bool:
    return a.shape == b.shape and builtins.bool(np.array_equal(a.numpy(), b.numpy()))


def numel(x):
    return x.numel()
