"""ONNX rules for reductions, ArgMax/ArgMin, CumSum, TopK, Trilu and Einsum."""
from __future__ import annotations

import numpy as np

from .. import ops
from .shape_rules import _axes_arg
from .values import _T, NP, OPS, _ints, op

# --- reductions --------------------------------------------------------------------------------

def _red_axes(x, ins, a):
    axes = _axes_arg(ins, a)
    if axes is None or (len(axes) == 0):
        if a.get("noop_with_empty_axes", 0) and axes is not None:
            return None
        if a.get("noop_with_empty_axes", 0) and axes is None:
            return None
        return tuple(range(x.ndim))
    return tuple(sorted(ax % x.ndim for ax in axes))


def _reduce(fn, empty):
    def rule(ins, a, c):
        x = _T(ins[0])
        axes = _red_axes(x, ins, a)
        if axes is None:
            return [x]
        keep = bool(a.get("keepdims", 1))
        if not axes:
            return [x]
        if any(x.shape[d] == 0 for d in axes):    # the reduction of an empty set: its identity
            shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if keep else \
                tuple(s for i, s in enumerate(x.shape) if i not in axes)
            v = empty if x.dtype == "float32" else {float("inf"): True if x.dtype == "bool" else (1 << 62),
                                                     float("-inf"): False if x.dtype == "bool" else -(1 << 62)}.get(empty, empty)
            # uploaded, not a constant: an infinite constant fill does not build today
            return [_T(np.full(shape, v, dtype={"float32": np.float32, "bool": np.bool_}.get(x.dtype, np.int64)))]
        return [fn(x, axes, keep)]
    return rule


_INF = float("inf")
OPS["ReduceSum"] = _reduce(lambda x, ax, k: x.sum(ax, k), 0)
OPS["ReduceMean"] = _reduce(lambda x, ax, k: x.mean(ax, k), float("nan"))
OPS["ReduceMax"] = _reduce(lambda x, ax, k: ops.amax(x, ax, k), -_INF)
OPS["ReduceMin"] = _reduce(lambda x, ax, k: ops.amin(x, ax, k), _INF)
OPS["ReduceProd"] = _reduce(lambda x, ax, k: _prod_axes(x, ax, k), 1)
OPS["ReduceSumSquare"] = _reduce(lambda x, ax, k: (x * x).sum(ax, k), 0)
OPS["ReduceL1"] = _reduce(lambda x, ax, k: x.abs().sum(ax, k), 0)
OPS["ReduceL2"] = _reduce(lambda x, ax, k: (x * x).sum(ax, k).sqrt(), 0)
OPS["ReduceLogSum"] = _reduce(lambda x, ax, k: x.sum(ax, k).log(), -_INF)
OPS["ReduceLogSumExp"] = _reduce(lambda x, ax, k: ops.logsumexp(x, ax, k), -_INF)


def _prod_axes(x, axes, keep):
    for ax in sorted(axes, reverse=True):
        x = ops.prod(x, ax, keepdim=True)
    return x if keep else x.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))


def _np_reduce(fn):
    def rule(ins, a, c):
        x = np.asarray(ins[0])
        axes = _axes_arg(ins, a)
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return [x]
            axes = None
        return [np.asarray(fn(x, axis=tuple(axes) if axes else None, keepdims=bool(a.get("keepdims", 1))))]
    return rule


NP["ReduceProd"] = _np_reduce(np.prod)
NP["ReduceMin"] = _np_reduce(np.min)
NP["ReduceMax"] = _np_reduce(np.max)


@op("ArgMax", "ArgMin")
def _argmax(ins, a, c):
    x = _T(ins[0])
    ax = a.get("axis", 0) % x.ndim
    keep = bool(a.get("keepdims", 1))
    fn = ops.argmax if c["op"] == "ArgMax" else ops.argmin
    if a.get("select_last_index", 0):
        n = x.shape[ax]
        r = fn(ops.flip(x, ax), ax, keep)
        return [(n - 1) - r]
    return [fn(x, ax, keep)]


@op("CumSum")
def _cumsum(ins, a, c):
    x = _T(ins[0])
    ax = int(_ints(ins[1])[0]) % x.ndim
    if a.get("reverse", 0):
        x = ops.flip(x, ax)
    out = ops.cumsum(x, ax)
    if a.get("exclusive", 0):
        out = out - x
    if a.get("reverse", 0):
        out = ops.flip(out, ax)
    return [out if out.dtype == _T(ins[0]).dtype else out.cast(_T(ins[0]).dtype)]


@op("TopK")
def _topk(ins, a, c):
    x = _T(ins[0])
    k = _ints(ins[1])[0]
    v, i = ops.topk(x, k, a.get("axis", -1), bool(a.get("largest", 1)))
    return [v, i]


@op("Trilu")
def _trilu(ins, a, c):
    x = _T(ins[0])
    k = _ints(ins[1])[0] if len(ins) > 1 and ins[1] is not None else 0
    return [ops.triu(x, k) if a.get("upper", 1) else ops.tril(x, k)]


@op("Einsum")
def _einsum(ins, a, c):
    return [ops.einsum(a["equation"], *[_T(x) for x in ins])]
