"""PyTorch ops the Tensor class lacks, composed from existing Tensor methods.

Every function here is built from the IR primitives through ordinary Tensor operations
(comparisons with ``arange``, ``where``, ``sum``, ``matmul``, views), so its gradient is
right by construction: no new gradient rules. Several compositions cost O(n^2) along the
dimension they work on (``sort``, ``topk``, ``argsort``, ``cumsum``, ``gather``,
``index_select``, ``scatter``); each says so. They are meant for the sizes of everyday
models (vocabularies, sequence lengths, class counts), not for sorting millions.

``TENSOR_METHODS`` names the functions that become Tensor methods (``x.clamp(...)``).
"""
from __future__ import annotations

import builtins
import math
import re
from collections import namedtuple

import numpy as np

from . import ir
from .dtypes import as_dtype
from .runtime import get_device
from .tensor import Tensor, arange, cat, full, host_rng, tensor, where

__all__ = [
    "clamp", "clip", "std", "var", "cumsum", "cumprod", "topk", "sort", "argsort", "einsum", "bmm", "mm",
    "gather", "scatter", "scatter_add", "index_select", "take_along_dim", "split", "chunk", "unbind",
    "narrow", "tril", "triu", "eye", "linspace", "full_like", "zeros_like", "ones_like", "rand_like",
    "randn_like", "empty_like", "randint", "randperm", "from_numpy", "as_tensor", "isnan", "isinf",
    "isfinite", "masked_fill", "max", "min", "amax", "amin", "argmax", "argmin", "logical_and",
    "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor",
    "bitwise_not", "floor_divide", "remainder", "fmod", "floor", "ceil", "trunc", "round", "frac",
    "sign", "pow", "exp", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt", "abs", "neg",
    "reciprocal", "square", "tanh", "sigmoid", "relu", "erf", "sum", "mean", "prod", "logsumexp",
    "norm", "all", "any", "matmul", "outer", "flip", "roll", "repeat", "tile", "repeat_interleave",
    "t", "to", "type_as", "clone", "getitem", "diag", "allclose", "equal", "softmax", "log_softmax",
    "maximum", "minimum", "sub", "add", "mul", "div", "true_divide", "where", "nonzero", "masked_select",
    "numel", "addmm", "baddbmm", "lerp", "hypot", "atan2_unsupported", "tensor_repr", "TENSOR_METHODS",
]

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


# --- elementwise math ------------------------------------------------------------------------

def exp(x):
    return x.exp()


def log(x):
    return x.log()


def log2(x):
    return x.log() * (1.0 / math.log(2.0))


def log10(x):
    return x.log() * (1.0 / math.log(10.0))


def log1p(x):
    """log(1 + x); computed as log(1 + x) (no extra precision near 0)."""
    return (x + 1.0).log()


def expm1(x):
    """exp(x) - 1; computed as exp(x) - 1 (no extra precision near 0)."""
    return x.exp() - 1.0


def sqrt(x):
    return x.sqrt()


def rsqrt(x):
    return x.sqrt().reciprocal()


def abs(x):  # noqa: A001
    return x.abs()


def neg(x):
    return -x


def reciprocal(x):
    return x.reciprocal()


def square(x):
    return x * x


def tanh(x):
    return x.tanh()


def sigmoid(x):
    return x.sigmoid()


def relu(x):
    return x.relu()


def erf(x):
    return x.erf()


def softmax(x, dim=-1, dtype=None):
    return x.softmax(dim)


def log_softmax(x, dim=-1, dtype=None):
    return x.log_softmax(dim)


def add(a, b, alpha=1):
    return a + (b * alpha if alpha != 1 else b)


def sub(a, b, alpha=1):
    return a - (b * alpha if alpha != 1 else b)


def mul(a, b):
    return a * b


def div(a, b, rounding_mode=None):
    """True division; ``rounding_mode`` "floor" or "trunc" as in torch.div."""
    if rounding_mode is None:
        return a / b
    if rounding_mode == "floor":
        return floor_divide(a, b)
    if rounding_mode == "trunc":
        q = trunc(_floatish(a) / b)
        return q.cast(_result_int(a, b)) if _result_int(a, b) else q
    raise ValueError(f"div: rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")


true_divide = div


def maximum(a, b):
    return a.maximum(b)


def minimum(a, b):
    return a.minimum(b)


def clamp(x: Tensor, min=None, max=None) -> Tensor:  # noqa: A002
    """torch.clamp: min and max may be numbers or tensors (broadcast). The gradient flows
    where min <= x <= max (ties split like torch's maximum)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    out = x
    if min is not None:
        lo = _lift(min, x)
        out = (out < lo).where_(lo, out) if not lo.requires_grad else out.maximum(lo)
    if max is not None:
        hi = _lift(max, x)
        out = (out > hi).where_(hi, out) if not hi.requires_grad else out.minimum(hi)
    return out


clip = clamp


def trunc(x: Tensor) -> Tensor:
    """Round toward zero (no gradient, like torch: its derivative is zero almost everywhere)."""
    if x.dtype != "float32":
        return x
    xd = x.detach()
    big = xd.abs() >= 2.0 ** 23          # already integral, and beyond int32/int64 casts' care
    return big.where_(xd, xd.cast("int64").float())


def floor(x: Tensor) -> Tensor:
    if x.dtype != "float32":
        return x
    t = trunc(x)
    return t - (t > x.detach()).float()


def ceil(x: Tensor) -> Tensor:
    if x.dtype != "float32":
        return x
    t = trunc(x)
    return t + (t < x.detach()).float()


def round(x: Tensor, decimals=0) -> Tensor:  # noqa: A001
    """Round half to even, like torch.round."""
    if x.dtype != "float32":
        return x
    if decimals:
        s = 10.0 ** decimals
        return round(x * s) * (1.0 / s)
    xd = x.detach()
    f = floor(xd)
    d = xd - f
    f_even = remainder(f, 2.0).eq(0.0)
    up = logical_or(d > 0.5, logical_and(d.eq(0.5), logical_not(f_even)))
    return up.where_(f + 1.0, f)


def frac(x: Tensor) -> Tensor:
    return x - trunc(x)


def sign(x: Tensor) -> Tensor:
    one = (x > 0).cast(x.dtype) if x.dtype != "bool" else x
    return one - (x < 0).cast(x.dtype) if x.dtype != "bool" else one


def _result_int(a, b):
    da = a.dtype if isinstance(a, Tensor) else ("int64" if isinstance(a, builtins.int) and not isinstance(a, builtins.bool) else "float32")
    db = b.dtype if isinstance(b, Tensor) else ("int64" if isinstance(b, builtins.int) and not isinstance(b, builtins.bool) else "float32")
    if da == "float32" or db == "float32":
        return None
    return ir.result_dtype(*(d if d != "bool" else "int64" for d in (da, db)))


def floor_divide(a, b) -> Tensor:
    """torch.floor_divide (rounds toward -inf, like Python's //). Integer inputs give an
    integer result, computed through float32: exact while |a| and |b| are below 2**24.
    No gradient flows (like torch, whose derivative is zero)."""
    if not isinstance(a, Tensor):
        a = b._lift(a)
    it = _result_int(a, b)
    q = floor(_floatish(a.detach()) / (b.detach() if isinstance(b, Tensor) else b))
    return q.cast(it) if it else q


def remainder(a, b) -> Tensor:
    """torch.remainder / Python's %: the result has the sign of the divisor."""
    if not isinstance(a, Tensor):
        a = b._lift(a)
    it = _result_int(a, b)
    if it:
        q = floor_divide(a, b)
        return a - q * b
    q = floor(_floatish(a.detach()) / (b.detach() if isinstance(b, Tensor) else b))
    return a - q * b


def fmod(a, b) -> Tensor:
    """C's fmod: the result has the sign of the dividend."""
    if not isinstance(a, Tensor):
        a = b._lift(a)
    it = _result_int(a, b)
    q = trunc(_floatish(a.detach()) / (b.detach() if isinstance(b, Tensor) else b))
    if it:
        q = q.cast(it)
    return a - q * b


def pow(a, b) -> Tensor:  # noqa: A001
    """torch.pow: tensor or number base and exponent. A negative base with an integral
    exponent keeps its sign (odd) or loses it (even); with a fractional exponent it is NaN."""
    if not isinstance(a, Tensor):
        if isinstance(b, Tensor) and isinstance(a, (builtins.int, builtins.float)) and a > 0:
            return (b * math.log(a)).exp()
        a = b._lift(a)
    if not isinstance(b, Tensor):
        p = builtins.float(b)
        if p.is_integer() and p < 0:
            return _float_pow_scalar(a, p)
        if p.is_integer() or p in (0.5,):
            return _T_POW(a, builtins.int(p) if p.is_integer() else p)
        return _float_pow_scalar(a, p)
    af = _floatish(a)
    bf = _floatish(b)
    mag = (bf * af.abs().log()).exp()
    bd = bf.detach()
    integral = floor(bd).eq(bd)
    odd = logical_and(integral, remainder(bd, 2.0).eq(1.0))
    neg_base = af.detach() < 0
    sgn = neg_base.where_(odd.where_(-1.0, integral.where_(1.0, float("nan"))), 1.0)
    zero = af.detach().eq(0.0)
    out = mag * sgn
    # 0 ** b: 0 for b > 0, 1 for b == 0, inf for b < 0 (log(0) = -inf handles all but b == 0)
    return logical_and(zero, bd.eq(0.0)).where_(1.0, out)


def _float_pow_scalar(a: Tensor, p: float) -> Tensor:
    af = _floatish(a)
    if p.is_integer():
        n = builtins.int(builtins.abs(p))
        r = _T_POW(af, n) if n else af * 0.0 + 1.0
        return r.reciprocal() if p < 0 else r
    mag = (af.abs().log() * p).exp()
    return (af.detach() < 0).where_(float("nan"), mag)


def isnan(x: Tensor) -> Tensor:
    return x.ne(x) if x.dtype == "float32" else full(x.shape, False, "bool", x.device)


def isinf(x: Tensor) -> Tensor:
    if x.dtype != "float32":
        return full(x.shape, False, "bool", x.device)
    return logical_or(x.eq(float("inf")), x.eq(float("-inf")))


def isfinite(x: Tensor) -> Tensor:
    if x.dtype != "float32":
        return full(x.shape, True, "bool", x.device)
    return (x.abs() < float("inf"))


def lerp(a, b, weight):
    return a + (b - a) * weight


def hypot(a, b):
    return (a * a + b * b).sqrt()


def atan2_unsupported(*_):
    raise NotImplementedError("atan2/sin/cos need a new IR primitive (not composable exactly)")


# --- logical / bitwise --------------------------------------------------------------------------

def _as_bool(x) -> Tensor:
    return x if x.dtype == "bool" else x.ne(0)


def logical_not(x: Tensor) -> Tensor:
    return _as_bool(x).eq(False)


def logical_and(a: Tensor, b) -> Tensor:
    b = _as_bool(_lift(b, a))
    return _as_bool(a).where_(b, False).cast("bool")


def logical_or(a: Tensor, b) -> Tensor:
    b = _as_bool(_lift(b, a))
    return _as_bool(a).where_(True, b).cast("bool")


def logical_xor(a: Tensor, b) -> Tensor:
    return _as_bool(a).ne(_as_bool(_lift(b, a)))


def _need_bool(name, *xs):
    for x in xs:
        if isinstance(x, Tensor) and x.dtype != "bool":
            raise TypeError(f"{name}: only bool tensors are supported (got {x.dtype}); "
                            "bitwise ops on integers need a new IR primitive")


def bitwise_and(a, b):
    _need_bool("&", a, b)
    return logical_and(a, b)


def bitwise_or(a, b):
    _need_bool("|", a, b)
    return logical_or(a, b)


def bitwise_xor(a, b):
    _need_bool("^", a, b)
    return logical_xor(a, b)


def bitwise_not(a):
    _need_bool("~", a)
    return logical_not(a)


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


def max(x: Tensor, dim=None, keepdim=False, *, out=None):  # noqa: A001
    """torch.max: ``max(x)`` the overall maximum; ``max(x, dim)`` a named tuple
    ``(values, indices)``; ``max(x, other_tensor)`` the elementwise maximum."""
    if isinstance(dim, Tensor):
        return x.maximum(dim)
    if dim is None:
        return amax(x)
    if isinstance(dim, (tuple, list)):
        return amax(x, tuple(dim), keepdim)
    return _MaxResult(amax(x, dim, keepdim), argmax(x, dim, keepdim))


def min(x: Tensor, dim=None, keepdim=False, *, out=None):  # noqa: A001
    if isinstance(dim, Tensor):
        return x.minimum(dim)
    if dim is None:
        return amin(x)
    if isinstance(dim, (tuple, list)):
        return amin(x, tuple(dim), keepdim)
    return _MinResult(amin(x, dim, keepdim), argmin(x, dim, keepdim))


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


# --- matrix products ------------------------------------------------------------------------------

def matmul(a, b):
    return a.matmul(b)


def mm(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 2 or b.ndim != 2:
        raise ir.ShapeError(f"mm: expected 2-D tensors, got {a.shape} and {b.shape}")
    return a.matmul(b)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    """Batched matmul of [B, N, M] and [B, M, P] (no broadcasting, like torch.bmm)."""
    if a.ndim != 3 or b.ndim != 3:
        raise ir.ShapeError(f"bmm: expected 3-D tensors, got {a.shape} and {b.shape}")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ir.ShapeError(f"bmm: shapes {a.shape} and {b.shape} do not fit ([B, N, M] @ [B, M, P])")
    return a.matmul(b)


def addmm(inp, a, b, beta=1, alpha=1):
    return inp * beta + a.matmul(b) * alpha


def baddbmm(inp, a, b, beta=1, alpha=1):
    return inp * beta + bmm(a, b) * alpha


def outer(a: Tensor, b: Tensor) -> Tensor:
    return a.reshape(-1, 1) * b.reshape(1, -1)


def t(x: Tensor) -> Tensor:
    """Transpose of a matrix (0-D and 1-D tensors come back as they are)."""
    if x.ndim > 2:
        raise ValueError(f"t() expects a tensor with <= 2 dimensions, got {x.ndim}")
    return x if x.ndim < 2 else x.transpose(0, 1)


def einsum(equation: str, *operands) -> Tensor:
    """torch.einsum, e.g. "bij,bjk->bik", "ij->ji", "bhqd,bhkd->bhqk", "...ij,...jk->...ik".
    Operands are contracted left to right, two at a time, as batched matmuls; indices that
    appear in one operand only and not in the output are summed first. Repeated indices
    within one operand (diagonals) are not supported."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    if "->" in eq:
        lhs, out = eq.split("->")
    else:
        lhs, out = eq, None
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: equation {equation!r} names {len(terms)} operands, got {len(operands)}")
    letters = set(re.sub(r"[^A-Za-z]", "", eq))
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in letters]
    ell_n = 0
    for term, op in zip(terms, operands):
        if "..." in term:
            ell_n = builtins.max(ell_n, op.ndim - (len(term) - 3))
    ell = "".join(spare[:ell_n])
    subs = []
    for term, op in zip(terms, operands):
        if "..." in term:
            k = op.ndim - (len(term) - 3)
            term = term.replace("...", ell[ell_n - k:])
        if len(term) != op.ndim:
            raise ValueError(f"einsum: term {term!r} does not fit operand of shape {op.shape}")
        if len(set(term)) != len(term):
            raise NotImplementedError(f"einsum: repeated index in {term!r} (diagonals) is not supported")
        subs.append(term)
    if out is None:
        counts = {}
        for s in subs:
            for c in s:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    sizes = {}
    for s, op in zip(subs, operands):
        for c, n in zip(s, op.shape):
            if c in sizes and n != sizes[c] and n != 1 and sizes[c] != 1:
                raise ir.ShapeError(f"einsum: index {c!r} has sizes {sizes[c]} and {n}")
            sizes[c] = builtins.max(sizes.get(c, 1), n)
    cur, cur_s = operands[0], subs[0]
    rest = list(zip(operands[1:], subs[1:]))

    def needed(later):
        return set(out) | {c for _, s in later for c in s}

    cur, cur_s = _sum_unneeded(cur, cur_s, needed(rest))
    while rest:
        (op, s), rest = rest[0], rest[1:]
        keep = needed(rest)
        op, s = _sum_unneeded(op, s, keep | set(cur_s))
        cur, cur_s = _contract2(cur, cur_s, op, s, keep, sizes)
    # final: sum anything not in out, then permute
    cur, cur_s = _sum_unneeded(cur, cur_s, set(out))
    for c in out:
        if c not in cur_s:
            raise ValueError(f"einsum: output index {c!r} appears in no operand")
    perm = [cur_s.index(c) for c in out]
    res = cur.permute(perm) if perm else cur
    target = tuple(sizes[c] for c in out)
    return res._expand_to(target) if res.shape != target else res


def _sum_unneeded(x, s, keep):
    drop = [i for i, c in enumerate(s) if c not in keep]
    if drop:
        x = x.sum(tuple(drop))
        s = "".join(c for c in s if c in keep)
    return x, s


def _contract2(a, sa, b, sb, keep, sizes):
    """Contract a[sa] with b[sb], keeping the indices in ``keep``: a batched matmul over
    batch (in both, kept), M (a only), K (in both, summed) and N (b only)."""
    batch = [c for c in sa if c in sb and c in keep]
    k = [c for c in sa if c in sb and c not in keep]
    m = [c for c in sa if c not in sb]
    n = [c for c in sb if c not in sa]

    def arrange(x, s, order):
        x = x.permute([s.index(c) for c in order]) if order else x
        shape = tuple(sizes[c] for c in order)
        return x._expand_to(shape) if x.shape != shape else x

    A = arrange(a, sa, batch + m + k)
    B = arrange(b, sb, batch + k + n)
    bs = tuple(sizes[c] for c in batch)
    M, K, N = (math.prod(sizes[c] for c in g) for g in (m, k, n))
    out = _floatish(A).reshape(bs + (M, K)).matmul(_floatish(B).reshape(bs + (K, N)))
    out = out.reshape(bs + tuple(sizes[c] for c in m) + tuple(sizes[c] for c in n))
    return out, "".join(batch + m + n)


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


# --- creation -------------------------------------------------------------------------------------

def _shape_of(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(builtins.int(s) for s in size)


def eye(n, m=None, dtype="float32", device=None, requires_grad=False) -> Tensor:
    m = n if m is None else m
    return tensor(np.eye(n, m), dtype=as_dtype(dtype), device=device, requires_grad=requires_grad)


def linspace(start, end, steps, dtype="float32", device=None, requires_grad=False) -> Tensor:
    # torch computes the first half from start and the second from end; float64 then
    # rounded matches it to float32 rounding
    return tensor(np.linspace(start, end, builtins.int(steps)), dtype=as_dtype(dtype), device=device,
                  requires_grad=requires_grad)


def full_like(x: Tensor, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full(x.shape, fill_value, as_dtype(dtype) if dtype else x.dtype, device or x.device, requires_grad)


def zeros_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full_like(x, 0, dtype, device, requires_grad)


def ones_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full_like(x, 1, dtype, device, requires_grad)


def empty_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Like torch, the values are unspecified (here: zeros)."""
    return full_like(x, 0, dtype, device, requires_grad)


def rand_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    arr = host_rng().random(x.shape, dtype=np.float32)
    return tensor(arr, dtype=as_dtype(dtype or "float32"), device=device or x.device, requires_grad=requires_grad)


def randn_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    arr = host_rng().standard_normal(x.shape, dtype=np.float32)
    return tensor(arr, dtype=as_dtype(dtype or "float32"), device=device or x.device, requires_grad=requires_grad)


def randint(low, high=None, size=None, dtype="int64", device=None, generator=None) -> Tensor:
    """torch.randint(high, size) / randint(low, high, size): integers in [low, high)."""
    if size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint: size is required")
    rng = generator if isinstance(generator, np.random.Generator) else host_rng()
    return tensor(rng.integers(low, high, size=tuple(size)), dtype=as_dtype(dtype), device=device)


def randperm(n, dtype="int64", device=None) -> Tensor:
    return tensor(host_rng().permutation(n), dtype=as_dtype(dtype), device=device)


def from_numpy(arr: np.ndarray, device=None) -> Tensor:
    """A tensor from a numpy array (copied to the device; float64 becomes float32)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(arr).__name__}")
    return tensor(arr, device=device)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    if isinstance(data, Tensor):
        return to(data, dtype=dtype) if dtype else data
    return tensor(data, dtype=as_dtype(dtype) if dtype else None, device=device)


def tensor_repr(x: Tensor) -> str:
    """torch-style printing with the values: ``tensor([[1.5000, 2.0000]], requires_grad=True)``
    (computes the tensor; falls back to shape and dtype if it cannot be read)."""
    try:
        arr = x.numpy()
    except Exception:   # noqa: BLE001  (e.g. inside a capture)
        return f"tensor(<shape={x.shape}, dtype={x.dtype}>)"
    if arr.dtype.kind == "f":
        integral = bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
        body = np.array2string(arr, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3,
                               precision=4, floatmode="maxprec" if integral else "fixed",
                               suppress_small=False)
    else:
        body = np.array2string(arr, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3)
    extras = []
    if x.dtype == "int32":
        extras.append("dtype=engine.int32")
    if x.requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + body + "".join(", " + e for e in extras) + ")"


# What becomes a Tensor method (name -> function taking the tensor first).
TENSOR_METHODS = {
    "clamp": clamp, "clip": clamp, "clamp_min": lambda x, v: clamp(x, min=v),
    "clamp_max": lambda x, v: clamp(x, max=v), "std": std, "var": var, "cumsum": cumsum,
    "cumprod": cumprod, "topk": topk, "sort": sort, "argsort": argsort, "kthvalue": kthvalue,
    "bmm": bmm, "mm": mm, "outer": outer, "gather": gather, "scatter": scatter, "scatter_add": scatter_add,
    "index_select": index_select, "take_along_dim": take_along_dim, "split": split, "chunk": chunk,
    "unbind": unbind, "narrow": narrow, "tril": tril, "triu": triu, "diag": diag, "isnan": isnan,
    "isinf": isinf, "isfinite": isfinite, "masked_fill": masked_fill, "masked_select": masked_select,
    "nonzero": nonzero, "max": max, "min": min, "amax": amax, "amin": amin, "argmax": argmax,
    "argmin": argmin, "logical_and": logical_and, "logical_or": logical_or, "logical_xor": logical_xor,
    "logical_not": logical_not, "__and__": bitwise_and, "__or__": bitwise_or, "__xor__": bitwise_xor,
    "__invert__": bitwise_not, "__rand__": lambda a, b: bitwise_and(a, b),
    "__ror__": lambda a, b: bitwise_or(a, b), "__rxor__": lambda a, b: bitwise_xor(a, b),
    "floor_divide": floor_divide, "__floordiv__": floor_divide,
    "__rfloordiv__": lambda a, b: floor_divide(b, a), "remainder": remainder, "__mod__": remainder,
    "__rmod__": lambda a, b: remainder(b, a), "fmod": fmod, "div": div, "floor": floor, "ceil": ceil,
    "trunc": trunc, "round": round, "frac": frac, "sign": sign, "pow": pow, "__pow__": pow,
    "__rpow__": lambda a, b: pow(b, a), "log2": log2, "log10": log10, "log1p": log1p, "expm1": expm1,
    "rsqrt": rsqrt, "square": square, "prod": prod, "logsumexp": logsumexp, "norm": norm, "all": all,
    "any": any, "flip": flip, "roll": roll, "repeat": repeat, "tile": tile,
    "repeat_interleave": repeat_interleave, "t": t, "to": to, "type_as": type_as,
    "lerp": lerp, "mean": mean, "sum": sum, "__getitem__": getitem,
    "bool": lambda x: _as_bool(x), "new_zeros": lambda x, *s, **k: full(_shape_of(s), 0, k.get("dtype") or x.dtype, x.device),
    "new_ones": lambda x, *s, **k: full(_shape_of(s), 1, k.get("dtype") or x.dtype, x.device),
    "new_full": lambda x, s, v, **k: full(tuple(s), v, k.get("dtype") or x.dtype, x.device),
    "new_tensor": lambda x, data, **k: tensor(data, dtype=k.get("dtype"), device=x.device),
    "is_floating_point": lambda x: x.dtype == "float32",
    "dim": lambda x: x.ndim, "__repr__": tensor_repr, "__str__": tensor_repr,
}


def bind_methods(cls) -> None:
    """Make every function of ``TENSOR_METHODS`` a method of ``cls`` (engine.Tensor)."""
    for name, fn in TENSOR_METHODS.items():
        setattr(cls, name, fn)
