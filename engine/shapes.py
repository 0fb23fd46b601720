"""Shape arithmetic shared by the tensor API and codegen: broadcasting, dim lists, shape
arguments, contiguous strides."""
from __future__ import annotations

from . import ir

__all__ = ["broadcast_shape", "axes_of", "shape_arg", "contiguous_strides"]


def contiguous_strides(shape) -> tuple:
    """Row-major strides, in elements, of a contiguous array of ``shape``."""
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


def broadcast_shape(a, b) -> tuple:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ir.ShapeError(f"shapes {a} and {b} cannot be broadcast together")
        out.append(max(x, y) if x != 0 and y != 0 else 0)
    return tuple(out)


def axes_of(dim, ndim) -> tuple:
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    for d in dim:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim {d} out of range for a tensor of {ndim} dims")
    return tuple(sorted(d % ndim for d in dim))


def shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)
