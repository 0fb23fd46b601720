"""Splitting, joining and views: narrow, split, chunk, tril/triu, diag, flip, roll, repeat,
clone, to."""
from __future__ import annotations

import builtins

import numpy as np

from ..dtypes import as_dtype
from ..runtime import get_device
from ..tensor import Tensor, arange, cat, tensor
from ._helpers import _arange_along, _dim
from .indexing import index_select

# --- splitting, joining, views ---------------------------------------------------------------------

def narrow(x: Tensor, dim, start, length) -> Tensor:
    dim = _dim(dim, x.ndim)
    start = start % x.shape[dim] if start < 0 else start
    return x.shrink([(start, start + length, 1) if d == dim else (0, s, 1) for d, s in enumerate(x.shape)])


def split(x: Tensor, split_size_or_sections, dim=0) -> tuple:
    """torch.split: equal chunks of ``split_size`` (the last may be smaller) or a list of sizes."""
    dim = _dim(dim, x.ndim)
    n = x.shape[dim]
    if isinstance(split_size_or_sections, (builtins.int, np.integer)):
        s = builtins.int(split_size_or_sections)
        if s <= 0:
            raise ValueError(f"split: split_size must be positive, got {s}")
        sizes = [builtins.min(s, n - i) for i in range(0, n, s)] or [0]
    else:
        sizes = [builtins.int(v) for v in split_size_or_sections]
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} (dim {dim} of {x.shape})")
    out, off = [], 0
    for s in sizes:
        out.append(narrow(x, dim, off, s))
        off += s
    return tuple(out)


def chunk(x: Tensor, chunks: builtins.int, dim=0) -> tuple:
    """torch.chunk: ceil(n / chunks)-sized pieces (possibly fewer than ``chunks``)."""
    dim = _dim(dim, x.ndim)
    n = x.shape[dim]
    return split(x, builtins.max(-(-n // chunks), 1), dim)


def unbind(x: Tensor, dim=0) -> tuple:
    dim = _dim(dim, x.ndim)
    return tuple(narrow(x, dim, i, 1).squeeze(dim) for i in range(x.shape[dim]))


def _tri_mask(x: Tensor, diagonal, upper):
    r, c = x.shape[-2], x.shape[-1]
    rows = arange(r, device=x.device).reshape(r, 1)
    cols = arange(c, device=x.device).reshape(1, c)
    d = cols - rows
    return (d >= diagonal) if upper else (d <= diagonal)


def tril(x: Tensor, diagonal=0) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"tril: needs at least 2 dims, got {x.shape}")
    return _tri_mask(x, diagonal, False)._expand_to(x.shape).where_(x, False if x.dtype == "bool" else 0)


def triu(x: Tensor, diagonal=0) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"triu: needs at least 2 dims, got {x.shape}")
    return _tri_mask(x, diagonal, True)._expand_to(x.shape).where_(x, False if x.dtype == "bool" else 0)


def diag(x: Tensor, diagonal=0) -> Tensor:
    """1-D -> a square matrix with x on diagonal ``diagonal``; 2-D -> that diagonal of x."""
    k = diagonal
    if x.ndim == 1:
        n = x.shape[0] + builtins.abs(k)
        xp = x.pad(((0, builtins.abs(k)),)) if k else x
        mask = (_arange_along(n, 2, 1, x.device) - _arange_along(n, 2, 0, x.device)).eq(k)
        src = xp.reshape(n, 1) if k >= 0 else xp.reshape(1, n)
        out = mask.where_(src._expand_to((n, n)), 0)
        return out if out.dtype == x.dtype else out.cast(x.dtype)
    if x.ndim == 2:
        r, c = x.shape
        mask = (_arange_along(c, 2, 1, x.device) - _arange_along(r, 2, 0, x.device)).eq(k)._expand_to((r, c))
        v = mask.where_(x, 0).sum(1 if k >= 0 else 0)
        length = builtins.max(0, builtins.min(r + builtins.min(k, 0), c - builtins.max(k, 0)))
        v = narrow(v, 0, 0, length)
        return v if v.dtype == x.dtype else v.cast(x.dtype)
    raise ValueError(f"diag: expects a 1-D or 2-D tensor, got {x.shape}")


def flip(x: Tensor, dims) -> Tensor:
    """Reverse along ``dims`` (a one-hot permutation per dim, O(n^2))."""
    dims = (dims,) if isinstance(dims, builtins.int) else tuple(dims)
    for d in dims:
        d = _dim(d, x.ndim)
        n = x.shape[d]
        x = index_select(x, d, tensor(np.arange(n - 1, -1, -1), device=x.device))
    return x


def roll(x: Tensor, shifts, dims=None) -> Tensor:
    if dims is None:
        return roll(x.reshape(-1), shifts, 0).reshape(x.shape)
    shifts = (shifts,) if isinstance(shifts, builtins.int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, builtins.int) else tuple(dims)
    for s, d in zip(shifts, dims):
        d = _dim(d, x.ndim)
        n = x.shape[d]
        s %= n
        if s:
            x = cat([narrow(x, d, n - s, s), narrow(x, d, 0, n - s)], d)
    return x


def repeat(x: Tensor, *sizes) -> Tensor:
    """torch.Tensor.repeat (tile the whole tensor)."""
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    if len(sizes) < x.ndim:
        raise ValueError(f"repeat: {len(sizes)} sizes for a tensor of {x.ndim} dims")
    x = x.reshape((1,) * (len(sizes) - x.ndim) + x.shape)
    shape = []
    for s, r in zip(x.shape, sizes):
        shape += [r, s]
    y = x.reshape(tuple(v for s in x.shape for v in (1, s))).expand(tuple(shape))
    return y.reshape(tuple(s * r for s, r in zip(x.shape, sizes)))


def tile(x: Tensor, dims) -> Tensor:
    dims = tuple(dims)
    if len(dims) < x.ndim:
        dims = (1,) * (x.ndim - len(dims)) + dims
    return repeat(x, dims)


def repeat_interleave(x: Tensor, repeats: builtins.int, dim=None) -> Tensor:
    """Each element repeated ``repeats`` times along ``dim`` (integer repeats only)."""
    if not isinstance(repeats, (builtins.int, np.integer)):
        raise NotImplementedError("repeat_interleave: only an integer repeats is supported")
    if dim is None:
        x, dim = x.reshape(-1), 0
    dim = _dim(dim, x.ndim)
    y = x.unsqueeze(dim + 1)
    shape = list(y.shape)
    shape[dim + 1] = repeats
    y = y.expand(tuple(shape))
    return y.reshape(x.shape[:dim] + (x.shape[dim] * repeats,) + x.shape[dim + 1:])


def clone(x: Tensor) -> Tensor:
    """A copy with the same value and gradient path (Tensor.clone)."""
    return x.clone()


def type_as(x: Tensor, other: Tensor) -> Tensor:
    return x.cast(other.dtype)


def to(x: Tensor, *args, **kwargs) -> Tensor:
    """Tensor.to(dtype) / to(device) / to(device, dtype) / to(other_tensor). A device that
    is the tensor's own (or "cpu" naming the default OpenCL device) is a no-op."""
    dtype, device = kwargs.get("dtype"), kwargs.get("device")
    for a in args:
        if isinstance(a, Tensor):
            dtype, device = a.dtype, a.device
        elif a is None:
            continue
        else:
            try:
                dtype = as_dtype(a)
                continue
            except TypeError:
                device = a
    out = x
    if device is not None and not (isinstance(device, str) and device.split(":")[0] in ("cpu", "cuda", "mps")):
        dev = get_device(device)
        if dev is not x.device:
            out = tensor(out.numpy(), dtype=out.dtype, device=dev, requires_grad=x.requires_grad)
    if dtype is not None:
        out = out.cast(as_dtype(dtype))
    return out
