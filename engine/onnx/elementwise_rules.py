"""ONNX rules for elementwise math, activations, Where and Cast."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..nn import functional as F
from ..tensor import Tensor, full
from .values import _T, NP, OPS, _edtype, _onnx, op


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
