"""Elementwise math, comparisons, logical and bitwise ops, composed from Tensor methods."""
from __future__ import annotations

import builtins
import math

from .. import ir
from ..tensor import Tensor, full
from ._helpers import _T_POW, _floatish, _lift

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
