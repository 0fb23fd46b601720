"""Scans and sorting (cumsum, cumprod, sort, argsort, topk, kthvalue); each O(n^2) along
the dimension it works on."""
from __future__ import annotations

import builtins

import numpy as np

from ..dtypes import as_dtype
from ..tensor import Tensor, arange, cat, full, tensor
from ._helpers import _dim, _floatish, _move_last, _SortResult, _TopkResult
from .elementwise import logical_and
from .views import narrow

# --- scans, sorting -------------------------------------------------------------------------

def cumsum(x: Tensor, dim, dtype=None) -> Tensor:
    """Running sum along ``dim``: one matmul with an upper-triangular 0/1 constant,
    O(n^2) in the length of ``dim``. Integer inputs are summed in float32 (exact below 2**24)."""
    dim = _dim(dim, x.ndim)
    if x.ndim == 0:
        return x
    n = x.shape[dim]
    y = _floatish(_move_last(x, dim))
    tri = tensor(np.triu(np.ones((n, n), np.float32)), device=x.device)
    out = _move_last(y.matmul(tri), dim)
    if dtype is not None:
        return out.cast(as_dtype(dtype))
    return out if x.dtype == "float32" else out.cast("int64")


def cumprod(x: Tensor, dim) -> Tensor:
    """Running product: log-step (Hillis-Steele) multiplications of shifted copies."""
    dim = _dim(dim, x.ndim)
    y = _move_last(x, dim)
    n, shift = y.shape[-1], 1
    while shift < n:
        ones = full(y.shape[:-1] + (shift,), 1, y.dtype, y.device)
        y = y * cat([ones, y[..., :n - shift]], -1)
        shift *= 2
    return _move_last(y, dim)


def _ranks(x: Tensor, descending: builtins.bool) -> Tensor:
    """Stable rank of each element along the last dim, int64: O(n^2) comparisons."""
    xd = x.detach()
    n = xd.shape[-1]
    xi = xd.unsqueeze(-1)      # [..., n_i, 1]
    xj = xd.unsqueeze(-2)      # [..., 1, n_j]
    before = (xj > xi) if descending else (xj < xi)
    idx = arange(n, device=x.device)
    earlier = (idx.unsqueeze(0) < idx.unsqueeze(1))   # [i, j]: j < i
    ties = logical_and(xj.eq(xi), earlier)
    return (before.float().sum(-1) + ties.float().sum(-1)).long()   # [..., n_i]


def sort(x: Tensor, dim=-1, descending=False, stable=False):
    """torch.sort: named tuple (values, indices); stable for ties. O(n^2) along ``dim``:
    elements are ranked by pairwise comparison and moved by a one-hot selection
    (gradient flows to the selected elements)."""
    dim = _dim(dim, x.ndim)
    if x.ndim == 0:
        return _SortResult(x, full((), 0, "int64", x.device))
    y = _move_last(x, dim)
    n = y.shape[-1]
    rank = _ranks(y, descending)                                  # [..., n_i]
    r = arange(n, device=x.device)
    onehot = rank.unsqueeze(-1).eq(r)                             # [..., n_i, n_r]
    vals = onehot.where_(y.unsqueeze(-1), 0).sum(-2)               # [..., n_r]
    if y.dtype != "float32":
        vals = vals.cast(y.dtype)
    pos = arange(n, device=x.device).reshape((n, 1))
    ind = onehot.where_(pos, 0).sum(-2).long()
    return _SortResult(_move_last(vals, dim), _move_last(ind, dim))


def argsort(x: Tensor, dim=-1, descending=False, stable=False) -> Tensor:
    """Indices that sort ``x`` along ``dim`` (O(n^2), see :func:`sort`)."""
    return sort(x, dim, descending).indices


def topk(x: Tensor, k: builtins.int, dim=-1, largest=True, sorted=True):  # noqa: A002
    """torch.topk: named tuple (values, indices), sorted (O(n^2) along ``dim``)."""
    dim = _dim(dim, x.ndim)
    n = x.shape[dim] if x.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"topk: k ({k}) is out of range for dimension {dim} of size {n}")
    v, i = sort(x, dim, descending=largest)
    bounds = [(0, s, 1) for s in v.shape]
    if v.ndim:
        bounds[dim] = (0, k, 1)
    return _TopkResult(v.shrink(bounds), i.shrink(bounds))


def kthvalue(x: Tensor, k: builtins.int, dim=-1, keepdim=False):
    v, i = sort(x, dim)
    v, i = narrow(v, dim, k - 1, 1), narrow(i, dim, k - 1, 1)
    return (v, i) if keepdim else (v.squeeze(dim), i.squeeze(dim))
