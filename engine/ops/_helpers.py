"""Helpers shared by the op families: the Tensor methods captured before binding, result
tuples, dimension and lifting helpers."""
from __future__ import annotations

import builtins
from collections import namedtuple

import numpy as np

from ..tensor import Tensor, arange, tensor

# The Tensor methods these functions call, captured before any are rebound to the
# functions below (so binding ``sum``/``mean``/``__pow__``/``__getitem__`` cannot recurse).
_T_GETITEM = Tensor.__getitem__
_T_SUM = Tensor.sum
_T_MEAN = Tensor.mean
_T_POW = Tensor.__pow__

_MaxResult = namedtuple("max", ["values", "indices"])
_MinResult = namedtuple("min", ["values", "indices"])
_SortResult = namedtuple("sort", ["values", "indices"])
_TopkResult = namedtuple("topk", ["values", "indices"])


# --- helpers ---------------------------------------------------------------------------------

def _lift(x, like: Tensor) -> Tensor:
    return like._lift(x)


def _dim(dim, ndim) -> int:
    n = builtins.max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"dim {dim} out of range for a tensor of {ndim} dims")
    return dim % n


def _move_last(x: Tensor, dim: int) -> Tensor:
    return x if dim == x.ndim - 1 else x.transpose(dim, -1)


def _arange_along(n, ndim, dim, device, dtype="int64") -> Tensor:
    """arange(n) shaped to broadcast along ``dim`` of an ``ndim``-dim tensor."""
    shape = tuple(n if i == dim else 1 for i in range(ndim))
    return arange(n, dtype=dtype, device=device).reshape(shape)


def _floatish(x: Tensor) -> Tensor:
    return x if x.dtype == "float32" else x.float()


def _to_tensor(x, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return tensor(np.asarray(x), device=like.device)
    return tensor(np.asarray(x))
