"""The ONNX graph interpreter behind ``engine.onnx.load``.

Each value of the graph is either a numpy array (static: initializers of integer type,
``Constant`` nodes, shapes, and everything computed only from those) or an engine Tensor.
A node whose inputs are all static and whose op has a numpy rule is computed on the host
(constant folding, redone at each call because input shapes may change); every other node
is built from engine ops (``engine.ops`` / ``engine.nn.functional``), so gradients flow
to the float initializers, which are the module's parameters.
"""
from __future__ import annotations

import os

import numpy as np

from .. import ops
from ..nn import functional as F
from ..nn.modules import Module, Parameter
from ..tensor import Tensor, cat, full, tensor

__all__ = ["load", "OnnxModule", "OnnxImportError", "SUPPORTED_OPS"]


class OnnxImportError(RuntimeError):
    """An ONNX model uses something the importer does not support, or a node failed."""


def _onnx():
    try:
        import onnx  # noqa: F401  (optional extra, imported only here)
        from onnx import helper, numpy_helper
    except ImportError as e:   # pragma: no cover
        raise ImportError("engine.onnx needs the 'onnx' package: pip install onnx "
                          "(only its protobuf reader is used)") from e
    return onnx, helper, numpy_helper


# --- values ---------------------------------------------------------------------------------

def _is_static(x) -> bool:
    return isinstance(x, np.ndarray)


def _host(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _engine_array(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype == np.int32:
        return arr
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    raise OnnxImportError(f"unsupported tensor element type {arr.dtype}")


def _T(x) -> Tensor:
    """Any value as an engine tensor (0-d arrays stay 0-d)."""
    if isinstance(x, Tensor):
        return x
    arr = _engine_array(x)
    if arr.ndim == 0:
        return full((), arr.item(), {"f": "float32", "b": "bool"}.get(arr.dtype.kind, str(arr.dtype)))
    return tensor(arr)


def _ints(x) -> list:
    return [int(v) for v in np.asarray(_host(x)).reshape(-1)]


def _edtype(onnx_type: int) -> str:
    _, helper, _ = _onnx()
    npd = np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    if npd.kind == "f":
        return "float32"
    if npd == np.bool_:
        return "bool"
    if npd == np.int32:
        return "int32"
    if npd.kind in "iu":
        return "int64"
    raise OnnxImportError(f"unsupported Cast target {npd}")


# --- op rules ---------------------------------------------------------------------------------
# rule(ins, attrs, node_ctx) -> list of outputs. ``ins`` holds numpy arrays or Tensors
# (None for an omitted optional input). NP rules run when every input is static.

OPS: dict = {}
NP: dict = {}


def op(*names, np_rule=None):
    def deco(fn):
        for n in names:
            OPS[n] = fn
            if np_rule is not None:
                NP[n] = np_rule
        return fn
    return deco


def _int_div(a, b):
    q = ops.div(a, b, rounding_mode="trunc")
    return q


for _name, _fe, _fn in [
    ("Add", lambda a, b: _T(a) + _T(b), np.add), ("Sub", lambda a, b: _T(a) - _T(b), np.subtract),
    ("Mul", lambda a, b: _T(a) * _T(b), np.multiply),
    ("Div", lambda a, b: _int_div(_T(a), _T(b)) if _T(a).dtype != "float32" and _T(b).dtype != "float32" else _T(a) / _T(b),
     lambda a, b: (np.trunc(a / b).astype(np.result_type(a, b)) if np.asarray(a).dtype.kind in "iu" and np.asarray(b).dtype.kind in "iu" else a / b)),
    ("Pow", lambda a, b: ops.pow(_T(a), _T(b)).cast(_T(a).dtype) if _T(a).dtype != "float32" else ops.pow(_T(a), _T(b)),
     lambda a, b: np.power(a, b).astype(np.asarray(a).dtype)),
    ("Equal", lambda a, b: _T(a).eq(_T(b)), np.equal), ("Less", lambda a, b: _T(a) < _T(b), np.less),
    ("Greater", lambda a, b: _T(a) > _T(b), np.greater), ("LessOrEqual", lambda a, b: _T(a) <= _T(b), np.less_equal),
    ("GreaterOrEqual", lambda a, b: _T(a) >= _T(b), np.greater_equal),
    ("And", lambda a, b: ops.logical_and(_T(a), _T(b)), np.logical_and),
    ("Or", lambda a, b: ops.logical_or(_T(a), _T(b)), np.logical_or),
    ("Xor", lambda a, b: ops.logical_xor(_T(a), _T(b)), np.logical_xor),
]:
    OPS[_name] = (lambda fe: lambda ins, a, c: [fe(ins[0], ins[1])])(_fe)
    NP[_name] = (lambda fn: lambda ins, a, c: [np.asarray(fn(ins[0], ins[1]))])(_fn)


def _mod_np(ins, a, c):
    x, y = ins
    return [np.fmod(x, y) if a.get("fmod", 0) else np.mod(x, y)]


@op("Mod", np_rule=_mod_np)
def _mod(ins, a, c):
    return [ops.fmod(_T(ins[0]), _T(ins[1])) if a.get("fmod", 0) else ops.remainder(_T(ins[0]), _T(ins[1]))]


_UNARY = {
    "Neg": (lambda x: -x, np.negative), "Abs": (lambda x: x.abs(), np.abs), "Exp": (lambda x: x.exp(), np.exp),
    "Log": (lambda x: x.log(), np.log), "Sqrt": (lambda x: x.sqrt(), np.sqrt),
    "Reciprocal": (lambda x: x.reciprocal(), np.reciprocal), "Relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0)),
    "Sigmoid": (lambda x: x.sigmoid(), None), "Tanh": (lambda x: x.tanh(), np.tanh), "Erf": (lambda x: x.erf(), None),
    "Floor": (ops.floor, np.floor), "Ceil": (ops.ceil, np.ceil), "Round": (ops.round, np.round),
    "Sign": (ops.sign, np.sign), "Not": (ops.logical_not, np.logical_not), "Softplus": (F.softplus, None),
    "Softsign": (lambda x: x / (x.abs() + 1.0), None), "Mish": (F.mish, None), "HardSwish": (F.hardswish, None),
    "Identity": (lambda x: x, lambda x: x), "IsNaN": (ops.isnan, np.isnan),
}
for _name, (_fe, _fn) in _UNARY.items():
    OPS[_name] = (lambda fe: lambda ins, a, c: [fe(_T(ins[0]))])(_fe)
    if _fn is not None:
        NP[_name] = (lambda fn: lambda ins, a, c: [np.asarray(fn(ins[0]))])(_fn)


@op("IsInf")
def _isinf(ins, a, c):
    x = _T(ins[0])
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    out = ops.logical_and(ops.isinf(x), x > 0) if not neg else ops.logical_and(ops.isinf(x), x < 0) if not pos else ops.isinf(x)
    if not pos and not neg:
        out = full(x.shape, False, "bool")
    return [out]


@op("LeakyRelu")
def _leaky(ins, a, c):
    return [F.leaky_relu(_T(ins[0]), a.get("alpha", 0.01))]


@op("Elu")
def _elu(ins, a, c):
    return [F.elu(_T(ins[0]), a.get("alpha", 1.0))]


@op("Selu")
def _selu(ins, a, c):
    x = _T(ins[0])
    al, g = a.get("alpha", 1.67326319217681884765625), a.get("gamma", 1.05070102214813232421875)
    return [(x > 0).where_(x * g, (x.minimum(0.0).exp() - 1.0) * (al * g))]


@op("Celu")
def _celu(ins, a, c):
    x = _T(ins[0])
    al = a.get("alpha", 1.0)
    return [x.relu() + ((x * (1.0 / al)).minimum(0.0).exp() - 1.0).minimum(0.0) * al]


@op("ThresholdedRelu")
def _trelu(ins, a, c):
    x = _T(ins[0])
    return [(x > a.get("alpha", 1.0)).where_(x, 0.0)]


@op("HardSigmoid")
def _hsig(ins, a, c):
    x = _T(ins[0])
    return [ops.clamp(x * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0)]


@op("PRelu")
def _prelu(ins, a, c):
    x, s = _T(ins[0]), _T(ins[1])
    return [(x < 0).where_(x * s, x)]


@op("Gelu")
def _gelu(ins, a, c):
    return [F.gelu(_T(ins[0]), a.get("approximate", "none"))]


@op("Clip")
def _clip(ins, a, c):
    x = _T(ins[0])
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    lo = np.asarray(lo).item() if lo is not None and not isinstance(lo, Tensor) else lo
    hi = np.asarray(hi).item() if hi is not None and not isinstance(hi, Tensor) else hi
    if lo is None and hi is None:
        return [x]
    out = ops.clamp(x, lo, hi)
    return [out if out.dtype == x.dtype else out.cast(x.dtype)]


def _variadic(fe, fn):
    def eng(ins, a, c):
        out = _T(ins[0])
        for y in ins[1:]:
            out = fe(out, _T(y))
        return [out]

    def host(ins, a, c):
        out = ins[0]
        for y in ins[1:]:
            out = fn(out, y)
        return [np.asarray(out)]
    return eng, host


for _name, _fe, _fn in [("Sum", lambda x, y: x + y, np.add), ("Max", lambda x, y: x.maximum(y), np.maximum),
                        ("Min", lambda x, y: x.minimum(y), np.minimum)]:
    OPS[_name], NP[_name] = _variadic(_fe, _fn)


@op("Mean")
def _mean(ins, a, c):
    out = _T(ins[0])
    for y in ins[1:]:
        out = out + _T(y)
    return [out * (1.0 / len(ins))]


@op("Where", np_rule=lambda ins, a, c: [np.where(*ins)])
def _where(ins, a, c):
    cond = _T(ins[0])
    x, y = ins[1], ins[2]
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        x = _T(x)
    return [cond.where_(_T(x) if not np.ndim(x) == 0 or isinstance(x, Tensor) else np.asarray(x).item(),
                        _T(y) if not np.ndim(y) == 0 or isinstance(y, Tensor) else np.asarray(y).item())]


def _cast_np(ins, a, c):
    _, helper, _ = _onnx()
    return [np.asarray(ins[0]).astype(helper.tensor_dtype_to_np_dtype(a["to"]))]


@op("Cast", np_rule=_cast_np)
def _cast(ins, a, c):
    x = _T(ins[0])
    dt = _edtype(a["to"])
    if dt == "bool" and x.dtype != "bool":
        return [x.ne(0)]
    return [x.cast(dt)]


@op("CastLike")
def _castlike(ins, a, c):
    dt = _T(ins[1]).dtype
    x = _T(ins[0])
    return [x.ne(0) if dt == "bool" and x.dtype != "bool" else x.cast(dt)]


# --- shapes (host) -----------------------------------------------------------------------------

def _shape_of(x):
    return tuple(x.shape)


@op("Shape", np_rule=lambda ins, a, c: _shape_rule(ins, a))
def _shape(ins, a, c):
    return _shape_rule(ins, a)


def _shape_rule(ins, a):
    s = np.array(_shape_of(ins[0]), np.int64)
    start, end = a.get("start", 0), a.get("end", None)
    return [s[start:end]]


@op("Size", np_rule=lambda ins, a, c: [np.array(int(np.prod(_shape_of(ins[0]))), np.int64)])
def _size(ins, a, c):
    return [np.array(int(np.prod(_shape_of(ins[0]))), np.int64)]


def _const_rule(ins, a, c):
    _, _, nh = _onnx()
    if "value" in a:
        return [a["value"]]
    for k, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                  ("value_ints", np.int64)):
        if k in a:
            return [np.array(a[k], dt)]
    raise OnnxImportError(f"Constant: unsupported attributes {sorted(a)}")


@op("Constant", np_rule=_const_rule)
def _constant(ins, a, c):
    return _const_rule(ins, a, c)


def _cos_rule(ins, a, c):
    v = a.get("value")
    shape = _ints(ins[0])
    if v is None:
        return [np.zeros(shape, np.float32)]
    return [np.full(shape, np.asarray(v).reshape(-1)[0], dtype=np.asarray(v).dtype)]


@op("ConstantOfShape", np_rule=_cos_rule)
def _cos(ins, a, c):
    return _cos_rule(ins, a, c)


@op("Range", np_rule=lambda ins, a, c: [np.arange(ins[0], ins[1], ins[2]).astype(np.asarray(ins[0]).dtype)])
def _range(ins, a, c):
    s, l, d = (np.asarray(_host(x)) for x in ins)
    return [np.arange(s, l, d).astype(s.dtype)]


def _reshape_target(shape_in, target, allowzero):
    out = []
    for i, t in enumerate(target):
        out.append(shape_in[i] if t == 0 and not allowzero else t)
    return out


@op("Reshape", np_rule=lambda ins, a, c: [np.reshape(ins[0], _reshape_target(ins[0].shape, _ints(ins[1]), a.get("allowzero", 0)))])
def _reshape(ins, a, c):
    x = _T(ins[0])
    return [x.reshape(_reshape_target(x.shape, _ints(ins[1]), a.get("allowzero", 0)))]


@op("Flatten", np_rule=lambda ins, a, c: [_flatten_np(ins[0], a.get("axis", 1))])
def _flatten(ins, a, c):
    x = _T(ins[0])
    ax = a.get("axis", 1)
    ax = ax + x.ndim if ax < 0 else ax
    return [x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))]


def _flatten_np(x, axis):
    ax = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))


@op("Transpose", np_rule=lambda ins, a, c: [np.transpose(ins[0], a.get("perm"))])
def _transpose(ins, a, c):
    x = _T(ins[0])
    perm = a.get("perm") or list(reversed(range(x.ndim)))
    return [x.permute(perm)]


def _axes_arg(ins, a, idx=1):
    if len(ins) > idx and ins[idx] is not None:
        return _ints(ins[idx])
    v = a.get("axes")
    return list(v) if v is not None else None


@op("Unsqueeze", np_rule=lambda ins, a, c: [_unsqueeze_np(ins[0], _axes_arg(ins, a))])
def _unsqueeze(ins, a, c):
    x = _T(ins[0])
    axes = _axes_arg(ins, a)
    n = x.ndim + len(axes)
    axes = sorted(ax % n for ax in axes)
    shape = list(x.shape)
    for ax in axes:
        shape.insert(ax, 1)
    return [x.reshape(tuple(shape))]


def _unsqueeze_np(x, axes):
    n = np.ndim(x) + len(axes)
    return np.expand_dims(x, tuple(sorted(ax % n for ax in axes)))


@op("Squeeze", np_rule=lambda ins, a, c: [np.squeeze(ins[0], tuple(_axes_arg(ins, a))) if _axes_arg(ins, a) else np.squeeze(ins[0])])
def _squeeze(ins, a, c):
    x = _T(ins[0])
    axes = _axes_arg(ins, a)
    if axes is None:
        return [x.reshape(tuple(s for s in x.shape if s != 1))]
    axes = {ax % x.ndim for ax in axes}
    return [x.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))]


def _concat_np(ins, a, c):
    return [np.concatenate([np.asarray(x) for x in ins if x is not None], a["axis"])]


@op("Concat", np_rule=_concat_np)
def _concat(ins, a, c):
    ts = [_T(x) for x in ins if x is not None]
    ts = [t for t in ts if t.numel() or len(ts) == 1]
    dts = {t.dtype for t in ts}
    if len(dts) > 1:
        raise OnnxImportError(f"Concat of mixed dtypes {dts}")
    if len(ts) == 1:
        return [ts[0]]
    return [cat(ts, a["axis"]) if ts[0].dtype != "bool" else cat([t.long() for t in ts], a["axis"]).ne(0)]


def _slice_params(shape, ins, a):
    starts, ends = _ints(ins[1]), _ints(ins[2])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    key = [slice(None)] * len(shape)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax %= len(shape)
        key[ax] = slice(*slice(s, e, st).indices(shape[ax]))
        # INT64_MAX/MIN-style bounds are handled by slice.indices' clamping
    return key


@op("Slice", np_rule=lambda ins, a, c: [np.asarray(ins[0])[tuple(_slice_params(np.shape(ins[0]), ins, a))]])
def _slice(ins, a, c):
    x = _T(ins[0])
    key = _slice_params(x.shape, ins, a)
    out = x
    pos = [k for k in key]
    neg = [d for d, k in enumerate(key) if k.step is not None and k.step < 0]
    for d in neg:
        k = key[d]
        idx = np.arange(x.shape[d])[k]
        pos[d] = slice(None)
        out = ops.index_select(out, d, tensor(idx.astype(np.int64))) if len(idx) else \
            out.shrink([(0, 0, 1) if i == d else (0, s, 1) for i, s in enumerate(out.shape)])
    if neg:
        return [out[tuple(p if i not in neg else slice(None) for i, p in enumerate(pos))]] if any(
            i not in neg and p != slice(None) for i, p in enumerate(pos)) else [out]
    return [x[tuple(key)]]


def _gather_np(ins, a, c):
    return [np.take(ins[0], np.asarray(ins[1]).astype(np.int64), axis=a.get("axis", 0))]


@op("Gather", np_rule=_gather_np)
def _gather(ins, a, c):
    x, idx = _T(ins[0]), ins[1]
    ax = a.get("axis", 0) % x.ndim
    if _is_static(idx):
        idx = np.asarray(idx).astype(np.int64)
        idx = np.where(idx < 0, idx + x.shape[ax], idx)
        if idx.ndim == 0:
            return [ops.narrow(x, ax, int(idx), 1).squeeze(ax)]
        flat = tensor(idx.reshape(-1))
        out_shape = x.shape[:ax] + idx.shape + x.shape[ax + 1:]
    else:
        flat = idx.reshape(-1).long()
        out_shape = x.shape[:ax] + idx.shape + x.shape[ax + 1:]
    sel = ops.index_select(x, ax, flat)
    return [sel.reshape(out_shape)]


@op("GatherElements")
def _gather_el(ins, a, c):
    x = _T(ins[0])
    idx = _T(ins[1]).long()
    ax = a.get("axis", 0) % x.ndim
    idx = (idx < 0).where_(idx + x.shape[ax], idx)
    return [ops.gather(x, ax, idx)]


def _split_sizes(n, ins, a, nout):
    if len(ins) > 1 and ins[1] is not None:
        return _ints(ins[1])
    if a.get("split") is not None:
        return list(a["split"])
    k = a.get("num_outputs", nout)
    size = -(-n // k)
    return [min(size, n - i * size) for i in range(k)]


@op("Split", np_rule=lambda ins, a, c: list(np.split(ins[0], np.cumsum(_split_sizes(np.shape(ins[0])[a.get("axis", 0)], ins, a, c["nout"]))[:-1], a.get("axis", 0))))
def _split(ins, a, c):
    x = _T(ins[0])
    ax = a.get("axis", 0) % x.ndim
    return list(ops.split(x, _split_sizes(x.shape[ax], ins, a, c["nout"]), ax))


def _expand_shape(xs, target):
    n = max(len(xs), len(target))
    a_ = (1,) * (n - len(xs)) + tuple(xs)
    b_ = (1,) * (n - len(target)) + tuple(target)
    return tuple(max(p, q) if 1 in (p, q) else p for p, q in zip(a_, b_))


@op("Expand", np_rule=lambda ins, a, c: [np.broadcast_to(ins[0], _expand_shape(np.shape(ins[0]), _ints(ins[1]))).copy()])
def _expand(ins, a, c):
    x = _T(ins[0])
    return [x._expand_to(_expand_shape(x.shape, _ints(ins[1])))]


@op("Tile", np_rule=lambda ins, a, c: [np.tile(ins[0], _ints(ins[1]))])
def _tile(ins, a, c):
    return [ops.tile(_T(ins[0]), _ints(ins[1]))]


@op("Pad")
def _pad(ins, a, c):
    x = _T(ins[0])
    pads = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(a.get("pads"))
    value = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("value", 0.0)
    value = float(np.asarray(_host(value)).reshape(-1)[0]) if value is not None else 0.0
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.ndim))
    axes = [ax % x.ndim for ax in axes]
    k = len(axes)
    torch_pad = []
    for d in reversed(range(x.ndim)):
        if d in axes:
            i = axes.index(d)
            torch_pad += [pads[i], pads[i + k]]
        else:
            torch_pad += [0, 0]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[a.get("mode", "constant")]
    return [F.pad(x, torch_pad, mode, value)]


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


# --- layers ------------------------------------------------------------------------------------

@op("MatMul")
def _matmul(ins, a, c):
    x, y = _T(ins[0]), _T(ins[1])
    if x.dtype != "float32" or y.dtype != "float32":
        return [x.float().matmul(y.float()).cast(x.dtype)]
    return [x.matmul(y)]


@op("Gemm")
def _gemm(ins, a, c):
    A, B = _T(ins[0]), _T(ins[1])
    if a.get("transA", 0):
        A = A.transpose(0, 1)
    if a.get("transB", 0):
        B = B.transpose(0, 1)
    y = A.matmul(B)
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if len(ins) > 2 and ins[2] is not None:
        C = _T(ins[2])
        y = y + (C * beta if beta != 1.0 else C)
    return [y]


def _auto_pads(a, spatial, kernel, strides, dil):
    auto = a.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    nd = len(spatial)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for s, k, st, d in zip(spatial, kernel, strides, dil):
            out = -(-s // st)
            total = max((out - 1) * st + (k - 1) * d + 1 - s, 0)
            small, big = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else big)
            pads_e.append(big if auto == "SAME_UPPER" else small)
        return pads_b, pads_e
    if auto == "VALID":
        return [0] * nd, [0] * nd
    p = list(a.get("pads", [0] * (2 * nd)))
    return p[:nd], p[nd:]


@op("Conv")
def _conv(ins, a, c):
    x, w = _T(ins[0]), _T(ins[1])
    b = _T(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    nd = x.ndim - 2
    if nd not in (1, 2):
        raise OnnxImportError(f"Conv: {nd}-D convolution is not supported (1-D and 2-D are)")
    kernel = list(a.get("kernel_shape") or w.shape[2:])
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    pb, pe = _auto_pads(a, x.shape[2:], kernel, strides, dil)
    if nd == 1:
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        strides, dil, pb, pe = [1] + strides, [1] + dil, [0] + pb, [0] + pe
    x = x.pad(((0, 0), (0, 0)) + tuple(zip(pb, pe)))
    y = F.conv2d(x, w, b, tuple(strides), 0, tuple(dil), a.get("group", 1))
    return [y.squeeze(2) if nd == 1 else y]


def _pool_geometry(x, a):
    nd = x.ndim - 2
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    pb, pe = _auto_pads(a, x.shape[2:], kernel, strides, dil)
    extra = [0] * nd
    if a.get("ceil_mode", 0):
        for i, (s, k, st, d) in enumerate(zip(x.shape[2:], kernel, strides, dil)):
            span = s + pb[i] + pe[i]
            eff = (k - 1) * d + 1
            out = -(-(span - eff) // st) + 1
            if (out - 1) * st >= s + pb[i]:
                out -= 1
            extra[i] = max((out - 1) * st + eff - span, 0)
    return nd, kernel, strides, dil, pb, pe, extra


def _as2d(x, nd):
    return x.unsqueeze(2) if nd == 1 else x


@op("MaxPool")
def _maxpool(ins, a, c):
    x = _T(ins[0])
    nd, kernel, strides, dil, pb, pe, extra = _pool_geometry(x, a)
    widths = ((0, 0), (0, 0)) + tuple((b_, e_ + x_) for b_, e_, x_ in zip(pb, pe, extra))
    xp = x
    if any(w for pair in widths for w in pair):
        # the mask is a host array: a padded constant-True condition trips the code generator
        inside = tensor(np.pad(np.ones(x.shape[2:], bool), widths[2:]))
        xp = inside.where_(x.pad(widths), float("-inf") if x.dtype == "float32" else -(1 << 62))
    red = tuple(range(-nd, 0))
    win = xp.window(tuple(kernel), tuple(strides), tuple(dil))
    y = ops.amax(win, red)
    if c["nout"] == 1:
        return [y]
    # Indices: the row-major flat position in x of each window's first maximum
    outs = win.shape[2:2 + nd]
    k = ops.argmax(win.reshape(win.shape[:2 + nd] + (-1,)), -1)          # position inside the window
    coords, rem = [], k
    for i in range(nd):
        inner = int(np.prod(kernel[i + 1:]))
        ki = ops.floor_divide(rem, inner) if inner > 1 else rem
        rem = rem - ki * inner if inner > 1 else rem
        o = tensor(np.arange(outs[i], dtype=np.int64).reshape((outs[i],) + (1,) * (nd - 1 - i)))
        coords.append(o * strides[i] + ki * dil[i] - pb[i])
    order = list(range(nd))[::-1] if a.get("storage_order", 0) else list(range(nd))   # 1: column-major
    flat = None
    for i in order:
        flat = coords[i] if flat is None else flat * x.shape[2 + i] + coords[i]
    nc = tensor(np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape((x.shape[0], x.shape[1]) + (1,) * nd))
    return [y, nc * int(np.prod(x.shape[2:])) + flat]


@op("AveragePool")
def _avgpool(ins, a, c):
    x = _T(ins[0])
    nd, kernel, strides, dil, pb, pe, extra = _pool_geometry(x, a)
    widths = ((0, 0), (0, 0)) + tuple((b_, e_ + x_) for b_, e_, x_ in zip(pb, pe, extra))
    xp = x.pad(widths)
    if a.get("count_include_pad", 0):
        ones = full(tuple(s + b_ + e_ for s, b_, e_ in zip(x.shape[2:], pb, pe)), 1.0).pad(tuple((0, x_) for x_ in extra))
    else:
        ones = full(x.shape[2:], 1.0).pad(tuple((b_, e_ + x_) for b_, e_, x_ in zip(pb, pe, extra)))
    K, S, D = tuple(kernel), tuple(strides), tuple(dil)
    red = tuple(range(-nd, 0))
    s = xp.window(K, S, D).sum(red)
    n = ones.window(K, S, D).sum(red)
    return [s / n]


@op("GlobalAveragePool")
def _gap(ins, a, c):
    x = _T(ins[0])
    return [x.mean(tuple(range(2, x.ndim)), keepdim=True)]


@op("GlobalMaxPool")
def _gmp(ins, a, c):
    x = _T(ins[0])
    return [ops.amax(x, tuple(range(2, x.ndim)), keepdim=True)]


@op("BatchNormalization")
def _bn(ins, a, c):
    x, scale, bias, mean, var = (_T(v) for v in ins[:5])
    eps = a.get("epsilon", 1e-5)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if a.get("training_mode", 0):
        dims = (0,) + tuple(range(2, x.ndim))
        m = x.mean(dims, keepdim=True)
        v = ((x - m) * (x - m)).mean(dims, keepdim=True)
        y = (x - m) * (v + eps).sqrt().reciprocal() * scale.reshape(shape) + bias.reshape(shape)
        mom = a.get("momentum", 0.9)
        return [y, mean * mom + m.reshape(-1) * (1 - mom), var * mom + v.reshape(-1) * (1 - mom)][:c["nout"]]
    y = (x - mean.reshape(shape)) * (var.reshape(shape) + eps).sqrt().reciprocal() * scale.reshape(shape) + bias.reshape(shape)
    return [y]


@op("InstanceNormalization")
def _inorm(ins, a, c):
    x, scale, bias = (_T(v) for v in ins[:3])
    dims = tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    m = x.mean(dims, keepdim=True)
    v = ((x - m) * (x - m)).mean(dims, keepdim=True)
    return [(x - m) * (v + a.get("epsilon", 1e-5)).sqrt().reciprocal() * scale.reshape(shape) + bias.reshape(shape)]


@op("LayerNormalization")
def _ln(ins, a, c):
    x = _T(ins[0])
    ax = a.get("axis", -1) % x.ndim
    dims = tuple(range(ax, x.ndim))
    m = x.mean(dims, keepdim=True)
    d = x - m
    inv = ((d * d).mean(dims, keepdim=True) + a.get("epsilon", 1e-5)).sqrt().reciprocal()
    y = d * inv * _T(ins[1])
    if len(ins) > 2 and ins[2] is not None:
        y = y + _T(ins[2])
    return [y, m, inv][:c["nout"]]


def _softmax_like(fn):
    def rule(ins, a, c):
        x = _T(ins[0])
        if c["opset"] < 13:
            ax = a.get("axis", 1) % max(x.ndim, 1)
            flat = x.reshape(int(np.prod(x.shape[:ax])), int(np.prod(x.shape[ax:])))
            return [fn(flat, 1).reshape(x.shape)]
        return [fn(x, a.get("axis", -1))]
    return rule


OPS["Softmax"] = _softmax_like(lambda x, d: x.softmax(d))
OPS["LogSoftmax"] = _softmax_like(lambda x, d: x.log_softmax(d))


@op("Dropout")
def _dropout(ins, a, c):
    x = _T(ins[0])
    training = len(ins) > 2 and ins[2] is not None and bool(np.asarray(_host(ins[2])).item())
    ratio = float(np.asarray(_host(ins[1])).item()) if len(ins) > 1 and ins[1] is not None else a.get("ratio", 0.5)
    y = F.dropout(x, ratio, True) if training and ratio > 0 else x
    outs = [y]
    if c["nout"] > 1:
        outs.append(full(x.shape, True, "bool") if not training else y.ne(0))
    return outs


SUPPORTED_OPS = sorted(OPS)


# --- the module ----------------------------------------------------------------------------------

class OnnxModule(Module):
    """An ONNX graph as a module: ``forward(*inputs)`` in the graph's input order (or by
    name as keywords); float initializers are parameters named as in the model."""

    def __init__(self, model):
        super().__init__()
        onnx, helper, nh = _onnx()
        g = model.graph
        self.opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [13])
        object.__setattr__(self, "_graph", g)
        init_names = set()
        consts = {}
        for t in g.initializer:
            arr = nh.to_array(t)
            init_names.add(t.name)
            if arr.dtype.kind == "f":
                self._params[t.name] = Parameter(arr.astype(np.float32))
            else:
                consts[t.name] = _engine_array(arr) if arr.dtype != np.bool_ else arr
        object.__setattr__(self, "_consts", consts)
        object.__setattr__(self, "input_names", [i.name for i in g.input if i.name not in init_names])
        object.__setattr__(self, "output_names", [o.name for o in g.output])
        nodes = []
        unsupported = []
        for i, n in enumerate(g.node):
            if n.domain not in ("", "ai.onnx"):
                unsupported.append(f"node {i} {n.name!r}: op {n.domain}.{n.op_type}")
                continue
            if n.op_type not in OPS:
                unsupported.append(f"node {i} {n.name!r}: op {n.op_type}")
                continue
            attrs = {}
            for at in n.attribute:
                v = helper.get_attribute_value(at)
                if isinstance(v, onnx.TensorProto):
                    v = nh.to_array(v)
                elif isinstance(v, bytes):
                    v = v.decode()
                elif isinstance(v, list) and v and isinstance(v[0], bytes):
                    v = [x.decode() for x in v]
                elif at.type == onnx.AttributeProto.GRAPH or at.type == onnx.AttributeProto.GRAPHS:
                    unsupported.append(f"node {i} {n.name!r}: op {n.op_type} with a subgraph attribute")
                attrs[at.name] = v
            nodes.append((i, n.name, n.op_type, list(n.input), list(n.output), attrs))
        if unsupported:
            raise OnnxImportError("unsupported ONNX operators (supported: " + ", ".join(SUPPORTED_OPS) + "):\n  "
                                  + "\n  ".join(unsupported))
        object.__setattr__(self, "_nodes", nodes)
        self._fold_constants()

    def _fold_constants(self):
        """Run, once, every node computable from initializers and Constants alone."""
        known = dict(self._consts)
        keep = []
        for (i, name, opt, ins, outs, attrs) in self._nodes:
            vals = [known.get(x) if x else None for x in ins]
            if opt in NP and all(v is not None for v, x in zip(vals, ins) if x) and \
                    (opt != "Shape" and opt != "Size" or all(v is not None for v in vals)):
                try:
                    res = NP[opt](vals, attrs, {"op": opt, "nout": len(outs), "opset": self.opset})
                    for o, r in zip(outs, res):
                        known[o] = _engine_array(r) if np.asarray(r).dtype != np.bool_ else np.asarray(r)
                    continue
                except Exception:     # noqa: BLE001  (fold at run time instead)
                    pass
            keep.append((i, name, opt, ins, outs, attrs))
        object.__setattr__(self, "_consts", known)
        object.__setattr__(self, "_nodes", keep)

    def forward(self, *args, **kwargs):
        env = dict(self._consts)
        env.update(self._params)
        if len(args) > len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} inputs {self.input_names}, got {len(args)}")
        for name, v in list(zip(self.input_names, args)) + list(kwargs.items()):
            env[name] = v if isinstance(v, Tensor) else _T(np.asarray(v))
        missing = [n for n in self.input_names if n not in env]
        if missing:
            raise TypeError(f"missing model inputs {missing}")
        for (i, name, opt, ins, outs, attrs) in self._nodes:
            vals = [env[x] if x else None for x in ins]
            ctx = {"op": opt, "nout": len(outs), "opset": self.opset}
            try:
                if opt in NP and all(_is_static(v) for v in vals if v is not None) and opt not in ("Shape", "Size"):
                    res = NP[opt](vals, attrs, ctx)
                    res = [_engine_array(r) if np.asarray(r).dtype != np.bool_ else np.asarray(r) for r in res]
                else:
                    res = OPS[opt](vals, attrs, ctx)
            except OnnxImportError as e:
                raise OnnxImportError(f"node {i} {name!r} ({opt}): {e}") from None
            except Exception as e:   # noqa: BLE001
                raise OnnxImportError(f"node {i} {name!r} ({opt}) failed: {type(e).__name__}: {e}") from e
            for o, r in zip(outs, res):
                if o:
                    env[o] = r
        out = tuple(_T(env[o]) for o in self.output_names)
        return out[0] if len(out) == 1 else out


def load(model, external_data_dir=None) -> OnnxModule:
    """An ONNX model (a path, bytes or a ``ModelProto``) as an engine module. External
    data files are read from the model's folder (or ``external_data_dir``)."""
    onnx, _, _ = _onnx()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    if external_data_dir is not None:
        from onnx.external_data_helper import load_external_data_for_model
        load_external_data_for_model(model, external_data_dir)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"engine.onnx.load: expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    return OnnxModule(model)
