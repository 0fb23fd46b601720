"""Indexing: index_select, gather, scatter, masks, nonzero, ``x[key]``; the gathers and
scatters are O(n^2) compositions along their dimension."""
from __future__ import annotations

import builtins
import math

import numpy as np

from .. import ir
from ..tensor import Tensor, arange, full, tensor
from ._helpers import _T_GETITEM, _dim, _move_last, _to_tensor
from .elementwise import _as_bool

# --- indexing -------------------------------------------------------------------------------------

def _select_last(y: Tensor, idx: Tensor, n: builtins.int) -> Tensor:
    """out[..., m] = y[..., idx[..., m]] over the last dim: a one-hot selection,
    O(len(idx) * n). ``idx`` broadcasts against y's leading dims."""
    onehot = idx.unsqueeze(-1).eq(arange(n, device=y.device))        # [..., m, n]
    sel = onehot.where_(y.unsqueeze(-2), 0).sum(-1)
    return sel if sel.dtype == y.dtype else sel.cast(y.dtype)


def _check_index(index: Tensor, n: builtins.int, what: str):
    if index.dtype not in ("int32", "int64"):
        raise TypeError(f"{what}: index must be an integer tensor, got {index.dtype}")
    if index.numel():
        arr = index.numpy()
        lo, hi = builtins.int(arr.min()), builtins.int(arr.max())
        if lo < -n or hi >= n:
            bad = lo if lo < -n else hi
            raise IndexError(f"{what}: index {bad} is out of bounds for size {n}")
        if lo < 0:
            index = (index < 0).where_(index + n, index)
    return index


def index_select(x: Tensor, dim: builtins.int, index) -> Tensor:
    """torch.index_select with a 1-D index (O(len(index) * size of dim), a one-hot selection)."""
    dim = _dim(dim, x.ndim)
    index = _to_tensor(index, x)
    if index.ndim > 1:
        raise ValueError(f"index_select: index must be 1-D, got shape {index.shape}")
    index = _check_index(index.reshape(-1), x.shape[dim], "index_select")
    y = _move_last(x, dim)
    return _move_last(_select_last(y, index, y.shape[-1]), dim)


def gather(x: Tensor, dim: builtins.int, index: Tensor) -> Tensor:
    """torch.gather: out[i][j][k] = x[i][index[i][j][k]][k] for dim=1. ``index`` may be
    smaller than ``x`` in the other dims. O(index.numel() * x.shape[dim])."""
    dim = _dim(dim, x.ndim)
    if index.ndim != x.ndim:
        raise ir.ShapeError(f"gather: index {index.shape} and input {x.shape} must have the same number of dims")
    for d in range(x.ndim):
        if d != dim and index.shape[d] > x.shape[d]:
            raise ir.ShapeError(f"gather: index {index.shape} is larger than input {x.shape} in dim {d}")
    index = _check_index(index, x.shape[dim], "gather")
    xs = x.shrink([(0, index.shape[d] if d != dim else s, 1) for d, s in enumerate(x.shape)])
    y = _move_last(xs, dim)
    return _move_last(_select_last(y, _move_last(index, dim), y.shape[-1]), dim)


def take_along_dim(x: Tensor, indices: Tensor, dim=None) -> Tensor:
    if dim is None:
        return gather(x.reshape(-1), 0, indices.reshape(-1))
    shape = tuple(builtins.max(a, b) if i != dim % x.ndim else b
                  for i, (a, b) in enumerate(zip(x.shape, indices.shape)))
    xe = x._expand_to(tuple(s if i != dim % x.ndim else x.shape[i] for i, s in enumerate(shape)))
    return gather(xe, dim, indices._expand_to(shape))


def _scatter_parts(x: Tensor, dim, index: Tensor, src):
    """(sum of the src values landing on each element of x, count landing there), for
    index/src over leading dims that may be smaller than x's."""
    dim = _dim(dim, x.ndim)
    if index.ndim != x.ndim:
        raise ir.ShapeError(f"scatter: index {index.shape} and input {x.shape} must have the same number of dims")
    n = x.shape[dim]
    index = _check_index(index, n, "scatter")
    if not isinstance(src, Tensor):
        src = full(index.shape, src, x.dtype, x.device)
    src = src.shrink([(0, s, 1) for s in index.shape])
    idx = _move_last(index, dim)                                  # [..., m]
    sv = _move_last(src, dim)
    hits = idx.unsqueeze(-1).eq(arange(n, device=x.device))       # [..., m, n]
    val = hits.where_(sv.unsqueeze(-1), 0).sum(-2)                # [..., n]
    cnt = hits.float().sum(-2)
    val, cnt = _move_last(val, dim), _move_last(cnt, dim)
    widths = [(0, (x.shape[d] - index.shape[d]) if d != dim else 0) for d in range(x.ndim)]
    val, cnt = val.pad(widths), cnt.pad(widths)
    if val.dtype != x.dtype:
        val = val.cast(x.dtype)
    return val, cnt


def scatter(x: Tensor, dim: builtins.int, index: Tensor, src=None, value=None, reduce=None) -> Tensor:
    """torch.scatter (out of place): elements of ``x`` that ``index`` points at take the
    ``src`` (or ``value``) element; ``reduce="add"``/``"multiply"`` not supported except add.
    Where several src elements land on the same place torch keeps an unspecified one; here
    their sum is kept, so indices should be unique along ``dim``. O(index.numel() * size)."""
    if src is None:
        src = value
    if reduce == "add":
        return scatter_add(x, dim, index, src)
    if reduce is not None:
        raise NotImplementedError(f"scatter: reduce={reduce!r} is not supported (use 'add')")
    val, cnt = _scatter_parts(x, dim, index, src)
    return (cnt > 0).where_(val, x)


def scatter_add(x: Tensor, dim: builtins.int, index: Tensor, src: Tensor) -> Tensor:
    """torch.scatter_add (out of place). O(index.numel() * x.shape[dim])."""
    val, _ = _scatter_parts(x, dim, index, src)
    return x + val


def masked_fill(x: Tensor, mask: Tensor, value) -> Tensor:
    """Out-of-place masked fill: ``value`` where ``mask`` is true (mask broadcasts to x)."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.ndim == 0 and not value.requires_grad:
        value = value.item()
    m = _as_bool(mask)
    if m.shape != x.shape:
        m = m._expand_to(x.shape) if len(m.shape) <= x.ndim else m
    v = value if isinstance(value, Tensor) else x._lift(value if x.dtype == "float32" or isinstance(value, builtins.bool)
                                                         else builtins.int(value))
    out = m.where_(v, x)
    if out.shape != x.shape:
        raise ir.ShapeError(f"masked_fill: mask {mask.shape} does not broadcast to {x.shape}")
    return out if out.dtype == x.dtype else out.cast(x.dtype)


def masked_select(x: Tensor, mask: Tensor) -> Tensor:
    """1-D tensor of the elements where mask is true (the mask is read on the host)."""
    m = _as_bool(mask)._expand_to(x.shape) if mask.shape != x.shape else _as_bool(mask)
    idx = np.flatnonzero(m.numpy())
    return index_select(x.reshape(-1), 0, tensor(idx.astype(np.int64), device=x.device))


def nonzero(x: Tensor, as_tuple=False):
    """Indices of the non-zero elements (computed on the host; no gradient)."""
    arr = x.numpy()
    nz = np.nonzero(arr)
    if as_tuple:
        return tuple(tensor(i.astype(np.int64), device=x.device) for i in nz)
    return tensor(np.stack(nz, 1).astype(np.int64).reshape(-1, arr.ndim), device=x.device)


def getitem(x: Tensor, key):
    """``x[key]`` with torch's advanced indexing as well: integer tensors / lists / numpy
    arrays and boolean masks, mixed with ints, slices, None and ``...``. Gradients flow
    (the selection is a one-hot sum, O(numel of the index * size of the indexed dims)).
    A boolean mask's True positions are read on the host (the result's size depends on them)."""
    if not isinstance(key, tuple):
        key = (key,)

    def is_adv(k):
        return isinstance(k, (Tensor, np.ndarray, list)) and not (isinstance(k, list) and
                                                                  builtins.any(isinstance(e, slice) for e in k))
    if not builtins.any(is_adv(k) for k in key):
        return _T_GETITEM(x, key)
    # expand boolean masks into one integer index per dim they cover
    norm = []
    for k in key:
        if is_adv(k):
            arr = k.numpy() if isinstance(k, Tensor) else np.asarray(k)
            if arr.dtype == np.bool_:
                norm.extend(("adv", a) for a in np.nonzero(arr))
                continue
            if not np.issubdtype(arr.dtype, np.integer):
                raise IndexError(f"tensors used as indices must be long, int or bool, got {arr.dtype}")
            norm.append(("adv", k if isinstance(k, Tensor) else arr))
        else:
            norm.append(("basic", k))
    if builtins.any(k is Ellipsis for _, k in norm):
        i = [k is Ellipsis for _, k in norm].index(True)
        used = builtins.sum(1 for kind, k in norm if kind == "adv" or (k is not None and k is not Ellipsis))
        norm = norm[:i] + [("basic", slice(None))] * (x.ndim - used) + norm[i + 1:]
    # first the basic part: ints stay as ints (dims vanish), advanced dims keep a full slice
    basic, dims_of_adv, d_out = [], [], 0
    adv = []
    for kind, k in norm:
        if kind == "adv":
            basic.append(slice(None))
            dims_of_adv.append(d_out)
            adv.append(k)
            d_out += 1
        elif k is None:
            basic.append(None)
            d_out += 1
        elif isinstance(k, (builtins.int, np.integer)):
            basic.append(k)
        else:
            basic.append(k)
            d_out += 1
    y = _T_GETITEM(x, tuple(basic))
    sizes = [y.shape[d] for d in dims_of_adv]
    idx = []
    for k, n in zip(adv, sizes):
        it = k if isinstance(k, Tensor) else tensor(np.asarray(k).astype(np.int64), device=x.device)
        idx.append(_check_index(it.long(), n, "index"))
    bshape = ()
    for it in idx:
        bshape = _bshape(bshape, it.shape)
    lin = None
    for it, n in zip(idx, sizes):
        it = it._expand_to(bshape) if it.shape != bshape else it
        lin = it if lin is None else lin * n + it
    adjacent = dims_of_adv == list(range(dims_of_adv[0], dims_of_adv[0] + len(dims_of_adv)))
    others = [d for d in range(y.ndim) if d not in dims_of_adv]
    first = dims_of_adv[0] if adjacent else 0
    # bring the advanced dims together, last, flattened
    z = y.permute(others + dims_of_adv) if others + dims_of_adv != list(range(y.ndim)) else y
    z = z.reshape(tuple(y.shape[d] for d in others) + (math.prod(sizes),))
    sel = _select_last(z, lin.reshape(-1), z.shape[-1])            # [*others, L]
    sel = sel.reshape(tuple(y.shape[d] for d in others) + bshape)
    nb, no = len(bshape), len(others)
    order = list(range(first)) + list(range(no, no + nb)) + list(range(first, no))
    return sel.permute(order) if order != list(range(len(order))) else sel


def _bshape(a, b):
    n = builtins.max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for p, q in zip(a, b):
        if p != q and p != 1 and q != 1:
            raise IndexError(f"shape mismatch: indexing tensors could not be broadcast together with shapes {a} {b}")
        out.append(builtins.max(p, q))
    return tuple(out)
