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

from ..tensor import full, tensor, where
from .creation import (_shape_of, as_tensor, empty_like, eye, from_numpy, full_like, linspace, ones_like,
                       rand_like, randint, randn_like, randperm, zeros_like)
from .elementwise import (_as_bool, abs, add, atan2_unsupported, bitwise_and, bitwise_not, bitwise_or, bitwise_xor,
                          ceil, clamp, clip, div, erf, exp, expm1, floor, floor_divide, fmod, frac, hypot,
                          isfinite, isinf, isnan, lerp, log, log1p, log2, log10, log_softmax, logical_and,
                          logical_not, logical_or, logical_xor, maximum, minimum, mul, neg, pow, reciprocal, relu,
                          remainder, round, rsqrt, sigmoid, sign, softmax, sqrt, square, sub, tanh, true_divide,
                          trunc)
from .indexing import (gather, getitem, index_select, masked_fill, masked_select, nonzero, scatter, scatter_add,
                       take_along_dim)
from .linalg import addmm, baddbmm, bmm, einsum, matmul, mm, outer, t
from .printing import tensor_repr
from .reductions import (all, allclose, amax, amin, any, argmax, argmin, equal, logsumexp, max, mean, min, norm,
                         numel, prod, std, sum, var)
from .sorting import argsort, cumprod, cumsum, kthvalue, sort, topk
from .views import (chunk, clone, diag, flip, narrow, repeat, repeat_interleave, roll, split, tile, to, tril, triu,
                    type_as, unbind)

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
