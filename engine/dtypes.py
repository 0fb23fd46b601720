"""Dtypes as objects, PyTorch style: ``engine.float32``, ``engine.long``, ...

A dtype object is a ``str`` subclass whose value is the engine's own dtype name
("float32", "int32", "int64", "bool"), so everything that already takes or compares
dtype strings keeps working (``t.dtype == engine.float32`` is True, ``t.cast(engine.long)``
works). :func:`as_dtype` turns any spelling (a dtype object, a string such as "float" or
"long", a numpy dtype or scalar type, Python's ``float``/``int``/``bool``) into one.

Storage dtypes today are float32, int32, int64 and bool. float64, float16 and bfloat16
have names here so a ported script fails with a clear message rather than an
AttributeError; using them as a storage dtype raises ``TypeError``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["dtype", "float32", "float", "int32", "int", "int64", "long", "bool", "float64", "double",
           "float16", "half", "bfloat16", "as_dtype", "is_floating_point", "SUPPORTED"]

SUPPORTED = ("float32", "int32", "int64", "bool")


class dtype(str):
    """An engine dtype. Equal to (and hashed like) its name string."""
    __slots__ = ()

    @property
    def is_floating_point(self) -> bool:
        return self in ("float32", "float64", "float16", "bfloat16")

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "int32": 4, "int64": 8, "bool": 1, "float64": 8, "float16": 2,
                "bfloat16": 2}[str(self)]

    @property
    def numpy(self):
        """The numpy dtype of host arrays of this dtype."""
        return np.dtype({"bfloat16": "float32"}.get(str(self), str(self)))

    def __repr__(self):
        return f"engine.{str(self)}"

    def __eq__(self, other):
        try:
            return str.__eq__(self, _name(other))
        except TypeError:
            return False

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = str.__hash__

    def __reduce__(self):
        return (dtype, (str(self),))


float32 = dtype("float32")
int32 = dtype("int32")
int64 = dtype("int64")
bool = dtype("bool")          # noqa: A001  (torch.bool)
float64 = dtype("float64")
float16 = dtype("float16")
bfloat16 = dtype("bfloat16")
float = float32               # noqa: A001  (torch.float)
int = int32                   # noqa: A001  (torch.int)
long = int64
double = float64
half = float16

_ALIASES = {
    "float32": "float32", "float": "float32", "f4": "float32", "single": "float32",
    "int32": "int32", "int": "int32", "i4": "int32",
    "int64": "int64", "long": "int64", "i8": "int64",
    "bool": "bool", "bool_": "bool", "?": "bool", "uint8": None,
    "float64": "float64", "double": "float64", "f8": "float64",
    "float16": "float16", "half": "float16", "f2": "float16",
    "bfloat16": "bfloat16",
}


def _name(x) -> str:
    """The canonical name of any dtype spelling (raises TypeError if unknown)."""
    if isinstance(x, dtype):
        return str(x)
    if x is None:
        raise TypeError("None is not a dtype")
    if isinstance(x, str):
        key = x[6:] if x.startswith("torch.") else x[7:] if x.startswith("engine.") else x
        if _ALIASES.get(key):
            return _ALIASES[key]
        raise TypeError(f"unknown dtype {x!r}")
    import builtins
    if x is builtins.float:
        return "float32"
    if x is builtins.int:
        return "int64"
    if x is builtins.bool:
        return "bool"
    try:
        nd = np.dtype(x)
    except TypeError:
        # torch.dtype objects print as "torch.float32"
        s = str(x)
        if s.startswith("torch."):
            return _name(s)
        raise TypeError(f"unknown dtype {x!r}") from None
    if nd == np.bool_:
        return "bool"
    if nd.name in _ALIASES and _ALIASES[nd.name]:
        return _ALIASES[nd.name]
    raise TypeError(f"unknown dtype {x!r}")


def as_dtype(x, storage=True) -> dtype:
    """Any dtype spelling -> an engine dtype object. With ``storage`` (the default) only
    dtypes the engine can hold in a buffer are accepted."""
    name = _name(x)
    if storage and name not in SUPPORTED:
        raise TypeError(f"dtype {name} is not supported as a tensor storage dtype yet; "
                        f"supported: {', '.join(SUPPORTED)} (use float32 for floating point)")
    return dtype(name)


def is_floating_point(x) -> bool:
    """True for a floating-point dtype, or a tensor of one."""
    d = getattr(x, "dtype", x)
    return as_dtype(d, storage=False).is_floating_point
